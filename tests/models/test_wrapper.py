from collections import OrderedDict

import pytest
import torch
from torch import nn

from core.models import MultiTaskModel, MultiTaskWrapper, check_model, explain_layer, has_features
from core.models.protocol import ModelContractError
from core.tasks import TaskSpec

TASKS = [TaskSpec("segmentation", "segmentation", 3), TaskSpec("normal", "normal", 3),
         TaskSpec("scene", "classification", 2)]


class TensorEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)  # (B, 4, H/2, W/2)


class DictEncoder(TensorEncoder):
    def forward(self, x):
        fine = self.conv(x)
        return OrderedDict(fine=fine, coarse=fine[..., ::2, ::2])


def heads(pick=lambda rep: rep):
    class Head(nn.Module):
        def __init__(self, channels, image_level=False):
            super().__init__()
            self.conv, self.image_level = nn.Conv2d(4, channels, 1), image_level

        def forward(self, rep):
            out = self.conv(pick(rep))
            return out.mean((2, 3)) if self.image_level else out

    return {"segmentation": Head(3), "normal": Head(3), "scene": Head(2, image_level=True)}


@pytest.mark.parametrize("encoder, pick", [(TensorEncoder(), lambda rep: rep),
                                           (DictEncoder(), lambda rep: rep["coarse"])])
def test_wrapper_upsamples_activates_and_exposes_features(encoder, pick):
    model = MultiTaskWrapper(encoder, heads(pick), TASKS).eval()
    assert isinstance(model, MultiTaskModel) and check_model(model) is model
    x = torch.rand(2, 3, 16, 12)
    out = model(x)
    assert out["segmentation"].shape == (2, 3, 16, 12) and out["scene"].shape == (2, 2)
    assert torch.allclose(out["normal"].norm(dim=1), torch.ones(2, 16, 12), atol=1e-5)
    features = model.features(x)
    assert has_features(model) and all(f.dim() == 4 for f in features)
    decoded = model.decode(features, x.shape[-2:])
    assert all(torch.equal(decoded[t], out[t]) for t in out)
    assert explain_layer(model) is encoder.conv  # the encoder's last child with parameters


def test_wrapper_partitions_parameters_and_names_its_layer():
    model = MultiTaskWrapper(TensorEncoder(), heads(), TASKS, explain_layer="encoder.conv")
    assert explain_layer(model) is model.encoder.conv
    shared = {id(p) for p in model.shared_parameters()}
    per_task = [{id(p) for p in model.task_parameters(t.name)} for t in TASKS]
    assert shared.isdisjoint(set().union(*per_task))
    assert shared | set().union(*per_task) == {id(p) for p in model.parameters()}
    assert list(model.state_dict())[0].startswith("encoder.")


def test_wrapper_refuses_mismatched_heads_and_unknown_layers():
    with pytest.raises(ValueError, match="give exactly one head per task"):
        MultiTaskWrapper(TensorEncoder(), {"segmentation": nn.Identity()}, TASKS)
    with pytest.raises(AttributeError):
        MultiTaskWrapper(TensorEncoder(), heads(), TASKS, explain_layer="encoder.nope")
    with pytest.raises(ValueError, match="at least one task"):
        MultiTaskWrapper(TensorEncoder(), {}, [])


def test_a_model_without_the_contract_is_named():
    with pytest.raises(ModelContractError, match="lacks tasks, architecture, shared_parameters"):
        check_model(nn.Linear(2, 2))


def test_an_encoder_without_children_declares_no_explain_layer():
    class Bare(nn.Module):
        def forward(self, x):
            return x[:, :1].repeat(1, 4, 1, 1)

    model = MultiTaskWrapper(Bare(), heads(), TASKS)
    assert explain_layer(model) is None
