import copy

import numpy as np
import pytest
import torch

from core.evaluation.explain import (
    METHODS,
    attribute,
    explain_pair,
    region_mask,
    takes_class,
    takes_region,
    task_score,
)
from core.tasks import TaskSpec

SEG = TaskSpec("seg", "segmentation", 2, ("ground", "sky"))
DEPTH = TaskSpec("depth", "depth", 1)
NORMAL = TaskSpec("normal", "normal", 3)
LABEL = TaskSpec("label", "classification", 3)


class LinearNet(torch.nn.Module):
    """A 1x1 convolution per task: every score is linear in the input, so IG is exact."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.seg = torch.nn.Conv2d(3, 2, 1)
        self.depth = torch.nn.Conv2d(3, 1, 1)

    def forward(self, images):
        return {"seg": self.seg(images), "depth": self.depth(images)}


def test_region_mask():
    assert region_mask(None, (3, 4)).all()
    rectangle = region_mask((1, 2, 2, 1), (3, 4))
    assert rectangle.sum() == 2 and rectangle[1, 2] and rectangle[2, 2]
    mask = np.zeros((3, 4), dtype=bool)
    mask[0, 0] = True
    assert region_mask(mask, (3, 4)).sum() == 1


@pytest.mark.parametrize("region, message", [
    ((0, 0, 0, 2), "empty"),
    ((2, 0, 2, 1), r"top \+ height <= 3"),
    ((0, -1, 1, 1), "0 <= left"),
    (np.zeros((3, 4), dtype=bool), "no pixel"),
    (np.ones((4, 3), dtype=bool), r"shape \(3, 4\)"),
    ("top", "rectangle"),
])
def test_bad_regions_say_what_is_accepted(region, message):
    with pytest.raises(ValueError, match=message):
        region_mask(region, (3, 4))


def test_task_score_by_hand():
    seg = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).view(2, 2, 2, 2)  # (B, C, H, W)
    normal = torch.stack([torch.full((2, 2), v) for v in (0.0, 3.0, 6.0)]).unsqueeze(0)  # (1, 3, 2, 2)
    outputs = {"seg": seg, "normal": normal, "label": torch.tensor([[0.5, 2.0, -1.0]])}
    assert task_score(outputs, SEG, 1).tolist() == [5.5, 13.5]  # mean of 4..7 and 12..15
    assert task_score(outputs, SEG, 0, (0, 1, 2, 1)).tolist() == [2.0, 10.0]  # pixels (0,1), (1,1)
    assert task_score(outputs, NORMAL).tolist() == [3.0]
    assert task_score(outputs, LABEL, 1).tolist() == [2.0]
    assert takes_class(SEG) and takes_class(LABEL) and not takes_class(DEPTH)
    assert takes_region(SEG) and takes_region(NORMAL) and not takes_region(LABEL)


def test_bad_class_or_region_raises():
    outputs = {"seg": torch.zeros(1, 2, 4, 4), "depth": torch.zeros(1, 1, 4, 4), "label": torch.zeros(1, 3)}
    with pytest.raises(ValueError, match=r"class 2 .* 0\.\.1 \(ground, sky\)"):
        task_score(outputs, SEG, 2)
    with pytest.raises(ValueError, match="class None"):
        task_score(outputs, SEG, None)
    with pytest.raises(ValueError, match="target_class=None"):
        task_score(outputs, DEPTH, 0)
    with pytest.raises(ValueError, match="region=None"):
        task_score(outputs, LABEL, 0, (0, 0, 1, 1))
    with pytest.raises(ValueError, match="leaves the 4x4 image"):
        attribute(LinearNet(), torch.rand(1, 3, 4, 4), DEPTH, "integrated_gradients", None, (3, 3, 2, 2))
    with pytest.raises(ValueError, match="accepted: integrated_gradients, layer_gradcam"):
        attribute(LinearNet(), torch.rand(1, 3, 4, 4), DEPTH, "saliency")
    with pytest.raises(ValueError, match="declares no layer for LayerGradCam"):
        attribute(LinearNet(), torch.rand(1, 3, 4, 4), DEPTH, "layer_gradcam")


@pytest.mark.parametrize("spec, target_class, region", [(SEG, 1, (1, 2, 3, 4)), (DEPTH, None, None)])
def test_integrated_gradients_complete_on_a_linear_model(spec, target_class, region):
    model, image = LinearNet(), torch.rand(1, 3, 6, 8)
    attributions = attribute(model, image, spec, "integrated_gradients", target_class, region)
    with torch.no_grad():
        gap = (task_score(model(image), spec, target_class, region)
               - task_score(model(torch.zeros_like(image)), spec, target_class, region))
    assert attributions.shape == (6, 8)
    assert attributions.sum() == pytest.approx(gap.item(), abs=1e-5)


def test_integrated_gradients_nearly_complete_on_tiny_model(tiny_model):
    spec = tiny_model.tasks["segmentation"]
    torch.manual_seed(1)
    image = torch.rand(1, 3, 32, 32)
    attributions = attribute(tiny_model, image, spec, "integrated_gradients", 3, (4, 4, 16, 16), n_steps=64)
    with torch.no_grad():
        gap = (task_score(tiny_model(image), spec, 3, (4, 4, 16, 16))
               - task_score(tiny_model(torch.zeros_like(image)), spec, 3, (4, 4, 16, 16))).item()
    assert attributions.sum() == pytest.approx(gap, rel=0.02, abs=1e-4)


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_every_task_leaves_the_model_unchanged(tiny_model, method):
    model = copy.deepcopy(tiny_model).train()  # also checks BatchNorm statistics stay put
    state = copy.deepcopy(model.state_dict())
    image = torch.rand(1, 3, 32, 32)
    for spec in model.tasks.values():
        target_class = 0 if takes_class(spec) else None
        attributions = attribute(model, image, spec, method, target_class, n_steps=8)
        assert attributions.shape == (32, 32) and attributions.dtype == np.float32
        assert np.isfinite(attributions).all() and np.abs(attributions).max() > 0
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_explain_pair(tiny_model):
    unlearned = copy.deepcopy(tiny_model)
    with torch.no_grad():
        unlearned.heads["depth"].predict.bias += 1.0
    image = torch.rand(1, 3, 32, 32)
    pair = explain_pair(tiny_model, unlearned, image, tiny_model.tasks["depth"], "layer_gradcam",
                        region=(0, 0, 8, 8))
    assert set(pair) == {"before", "after", "score_before", "score_after"}
    assert pair["before"].shape == pair["after"].shape == (32, 32)
    assert pair["score_after"] == pytest.approx(pair["score_before"] + 1.0, abs=1e-5)
    np.testing.assert_allclose(pair["before"], pair["after"], atol=1e-6)  # a bias shift has no gradient
