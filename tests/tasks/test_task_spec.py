"""TaskSpec and what every registered kind shares: loss weighting, empty images, vmap, specs."""

import json
import math

import pytest
import torch
from task_helpers import ALL, DEPTH, SEG, approx, no_valid_batch, valid_batch

from core.tasks import KINDS, TaskSpec, UnknownTaskKind, delta_m

DEPTH_GT = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]], dtype=torch.float64)
DEPTH_PRED = torch.tensor([[[[1.2, 2.0], [2.0, 5.0]]]], dtype=torch.float64)

@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.kind)
def test_accumulator_without_valid_pixels_gives_nan(spec):
    pred, target = no_valid_batch(spec)
    acc = spec.accumulator()
    acc.update(pred, target)
    result = acc.compute()
    assert list(result) == list(spec.metrics)
    assert all(math.isnan(v) for v in result.values())
    assert all(math.isnan(v) for v in spec.accumulator().compute().values())

def test_loss_weights_mask_images_out():
    gt = DEPTH_GT.repeat(2, 1, 1, 1)
    pred = torch.stack([DEPTH_PRED[0], DEPTH_PRED[0] + 1]).requires_grad_()
    losses = DEPTH.per_sample_loss(pred, gt)
    assert DEPTH.loss(pred, gt).item() == approx(losses.mean().item())
    assert DEPTH.loss(pred, gt, torch.tensor([1.0, 0.0])).item() == approx(2.2 / 3)
    assert DEPTH.loss(pred, gt, torch.tensor([0.5, 0.5])).item() == approx(losses.mean().item())
    DEPTH.loss(pred, gt, torch.tensor([0.0, 1.0])).backward()
    assert pred.grad[0].abs().sum() == 0 and pred.grad[1].abs().sum() > 0

def test_all_zero_weight_gives_zero_loss_with_gradient():
    pred = DEPTH_PRED.clone().requires_grad_()
    loss = DEPTH.loss(pred, DEPTH_GT, torch.zeros(1))
    loss.backward()
    assert loss.item() == 0 and torch.equal(pred.grad, torch.zeros_like(pred))

@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.kind)
def test_image_without_valid_pixels_has_zero_loss(spec):
    pred, target = no_valid_batch(spec)
    pred = pred.clone().requires_grad_()
    loss = spec.per_sample_loss(pred, target)
    loss.sum().backward()
    assert loss.tolist() == [0.0]
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() == 0

@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.kind)
def test_per_sample_gradient_under_vmap_matches_loop(spec):
    raw, target = valid_batch(spec)

    def sample_loss(one_raw, one_target):
        return spec.per_sample_loss(spec.activate(one_raw[None]), one_target[None])[0]

    batched = torch.func.vmap(torch.func.grad(sample_loss))(raw, target)
    for i in range(len(raw)):
        one = raw[i].clone().requires_grad_()
        (expected,) = torch.autograd.grad(sample_loss(one, target[i]), one)
        torch.testing.assert_close(batched[i], expected)
    assert torch.isfinite(batched).all() and batched[2].abs().sum() == 0

def test_metric_names_and_directions():
    assert [s.metrics for s in ALL] == [
        ("miou", "pixel_acc"),
        ("miou", "pixel_acc"),
        ("maxf", "iou"),
        ("f_score", "precision", "recall"),
        ("abs_err", "rel_err", "delta1"),
        ("mean", "median", "a11", "a22", "a30"),
        ("accuracy",),
    ]
    assert [s.primary for s in ALL] == ["miou", "miou", "maxf", "f_score", "delta1", "a30",
                                        "accuracy"]
    assert [s.loss_name for s in ALL] == [
        "cross_entropy", "cross_entropy", "binary_cross_entropy", "balanced_binary_cross_entropy",
        "masked_l1", "cosine", "cross_entropy"]
    assert all(s.higher_is_better(s.primary) for s in ALL)
    lower = {m for s in ALL for m in s.metrics if not s.higher_is_better(m)}
    assert lower == {"abs_err", "rel_err", "mean", "median"}
    with pytest.raises(ValueError, match="'miou'.*abs_err, rel_err, delta1"):
        DEPTH.higher_is_better("miou")


def test_head_shapes_are_declared_by_the_kind():
    assert [s.per_pixel for s in ALL] == [True] * 6 + [False]
    assert [s.has_classes for s in ALL] == [True, True, False, False, False, False, True]
    assert [s.task_kind.folder for s in ALL] == ["label", "human_parts", "saliency", "edge",
                                                  "depth", "normal", "class"]


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.kind)
def test_dict_round_trip(spec):
    data = json.loads(json.dumps(spec.to_dict()))
    assert TaskSpec.from_dict(data) == spec
    assert data["class_names"] == list(spec.class_names)

def test_from_dict_errors_name_the_problem():
    with pytest.raises(ValueError, match="missing channels"):
        TaskSpec.from_dict({"name": "depth", "kind": "depth"})
    with pytest.raises(UnknownTaskKind, match="'flow'.*segmentation, parts, saliency, edges, depth"):
        TaskSpec.from_dict({"name": "f", "kind": "flow", "channels": 2})
    with pytest.raises(ValueError, match="unknown keys loss"):
        TaskSpec.from_dict({**DEPTH.to_dict(), "loss": "l2"})

def test_invalid_specs_give_clear_errors():
    assert issubclass(UnknownTaskKind, ValueError)
    assert KINDS == ("segmentation", "parts", "saliency", "edges", "depth", "normal",
                     "classification")
    with pytest.raises(UnknownTaskKind, match="'flow'"):
        TaskSpec("f", "flow", 2)
    with pytest.raises(ValueError, match="channels == 1, got channels=2"):
        TaskSpec("saliency", "saliency", 2)
    with pytest.raises(ValueError, match=r"channels >= 2 \(one per class\), got channels=1"):
        TaskSpec("parts", "parts", 1)
    with pytest.raises(ValueError, match="channels == 1, got channels=2"):
        TaskSpec("depth", "depth", 2)
    with pytest.raises(ValueError, match="channels == 3, got channels=4"):
        TaskSpec("normal", "normal", 4)
    with pytest.raises(ValueError, match=r"channels >= 2 \(one per class\), got channels=1"):
        TaskSpec("seg", "segmentation", 1)
    with pytest.raises(ValueError, match="channels=3 but 2 class_names"):
        TaskSpec("seg", "segmentation", 3, class_names=("a", "b"))
    with pytest.raises(ValueError, match="takes no class_names"):
        TaskSpec("depth", "depth", 1, class_names=("near",))


@pytest.mark.parametrize("name", ["../x", "a/b", "heads.seg", "", " seg", "-seg", "x" * 65, 3])
def test_a_task_name_with_path_characters_is_refused(name):
    with pytest.raises(ValueError, match=r"task name .* is not accepted; .*\[A-Za-z0-9_\]"):
        TaskSpec(name, "depth", 1)


def test_a_task_of_absurdly_many_channels_is_refused():
    assert TaskSpec("seg", "segmentation", 2**16).channels == 2**16
    with pytest.raises(ValueError, match="claims 1099511627776 channels; a task has at most 65,536"):
        TaskSpec("seg", "segmentation", 2**40)

def test_delta_m_by_hand():
    reference = {
        "segmentation": {"miou": 0.5, "pixel_acc": 0.8},
        "depth": {"abs_err": 0.5, "rel_err": 0.2, "delta1": 0.8},
    }
    metrics = {
        "segmentation": {"miou": 0.55, "pixel_acc": 0.8},  # +10%, 0 -> task +5%
        "depth": {"abs_err": 0.4, "rel_err": 0.25, "delta1": 0.8},  # +20%, -25%, 0 -> -5/3 %
    }
    assert delta_m(metrics, reference, [SEG, DEPTH]) == approx((5 - 5 / 3) / 2)
    assert delta_m(reference, reference, [SEG, DEPTH]) == 0
    with pytest.raises(ValueError, match="depth/delta1"):
        delta_m(metrics, {**reference, "depth": {"abs_err": 0.5, "rel_err": 0.2}}, [SEG, DEPTH])
