import pytest
import torch

from core.models import MultiTaskNet
from core.models.constant import ConstantModel
from core.tasks import TaskSpec

TASKS = [TaskSpec("segmentation", "segmentation", 5), TaskSpec("depth", "depth", 1),
         TaskSpec("normal", "normal", 3), TaskSpec("scene", "classification", 4)]


@pytest.mark.parametrize("backbone", ["small_cnn", "resnet18"])
def test_forward_returns_one_activated_prediction_per_task(backbone):
    model = MultiTaskNet(TASKS, {"backbone": backbone, "width": 8}).eval()
    out = model(torch.rand(2, 3, 32, 48))
    assert set(out) == {"segmentation", "depth", "normal", "scene"}
    assert out["segmentation"].shape == (2, 5, 32, 48)
    assert out["depth"].shape == (2, 1, 32, 48)
    assert out["scene"].shape == (2, 4)
    norms = out["normal"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)
    x = torch.rand(2, 3, 32, 48)
    decoded = model.decode(model.encoder(x), x.shape[-2:])  # what explore uses: features + outputs
    assert all(torch.equal(decoded[t], model(x)[t]) for t in out)


def test_shared_and_task_parameters_partition_the_model():
    model = MultiTaskNet(TASKS, {"width": 4})
    shared = {id(p) for p in model.shared_parameters()}
    heads = [{id(p) for p in model.task_parameters(t.name)} for t in TASKS]
    assert shared and all(heads)
    union = shared.union(*heads)
    assert union == {id(p) for p in model.parameters()}
    assert sum(len(h) for h in heads) + len(shared) == len(union)


def test_head_gradients_stay_in_their_task():
    model = MultiTaskNet(TASKS, {"width": 4})
    out = model(torch.rand(2, 3, 16, 16))
    out["depth"].sum().backward()
    assert all(p.grad is None for p in model.task_parameters("segmentation"))
    assert any(p.grad is not None for p in model.task_parameters("depth"))
    assert any(p.grad is not None for p in model.shared_parameters())


def test_bad_backbone_and_unknown_task_are_named():
    with pytest.raises(ValueError, match="'vgg'.*small_cnn"):
        MultiTaskNet(TASKS, {"backbone": "vgg"})
    with pytest.raises(KeyError, match="'colour'"):
        next(MultiTaskNet(TASKS, {"width": 4}).task_parameters("colour"))


def test_resnet18_downloads_nothing(monkeypatch):
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    MultiTaskNet(TASKS[:1], {"backbone": "resnet18"})


def test_constant_model_predicts_majority_and_median(indoor_source, use_cache):
    train = indoor_source.open("train")
    model = ConstantModel.fit(train)
    out = model(torch.zeros(2, 3, 8, 8))
    seg = train.batch(train.ids)["segmentation"]
    majority = torch.bincount(seg[seg >= 0]).argmax()
    assert (out["segmentation"].argmax(1) == majority).all()
    depth = train.batch(train.ids)["depth"]
    assert torch.isclose(out["depth"][0, 0, 0, 0], depth[depth > 0].median())
