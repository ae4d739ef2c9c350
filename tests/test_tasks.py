"""Tests for core.tasks: hand-computed losses and metrics on tiny tensors."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tasks import KINDS, TaskSpec, UnknownTaskKind, delta_m

SEG = TaskSpec("segmentation", "segmentation", 4)
DEPTH = TaskSpec("depth", "depth", 1)
NORMAL = TaskSpec("normal", "normal", 3)
CLS = TaskSpec("label", "classification", 3, class_names=("cat", "dog", "owl"))
ALL = (SEG, DEPTH, NORMAL, CLS)


def logits_for(labels, channels=4):
    """(B, H, W) labels -> (B, C, H, W) logits whose argmax is `labels`."""
    return 5.0 * F.one_hot(labels.clamp(min=0), channels).permute(0, 3, 1, 2).double()


def unit_vectors(degrees):
    """(B, H, W) angles from +z, in the x-z plane -> (B, 3, H, W) unit vectors."""
    rad = torch.deg2rad(torch.as_tensor(degrees, dtype=torch.float64))
    return torch.stack([rad.sin(), torch.zeros_like(rad), rad.cos()], dim=1)


# Segmentation: 5 valid pixels (g, p): (0,0) (0,1) (1,1) (1,3) (0,0); the ignored pixel predicts 2.
# Confusion rows (truth): [2,1,0,0], [0,1,0,1], [0,0,0,0], [0,0,0,0].
# IoU: class 0 = 2/3, class 1 = 1/3, class 2 absent (left out), class 3 only predicted = 0.
SEG_GT = torch.tensor([[[0, 0, 1], [1, -1, 0]]])
SEG_PRED = torch.tensor([[[0, 1, 1], [3, 2, 0]]])
SEG_MIOU = (2 / 3 + 1 / 3 + 0) / 3

# Depth: errors 0.2, 0, 2 on valid pixels; the gt-0 pixel is invalid. Ratios 1.2, 1, 2.
DEPTH_GT = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]], dtype=torch.float64)
DEPTH_PRED = torch.tensor([[[[1.2, 2.0], [2.0, 5.0]]]], dtype=torch.float64)

# Normal: valid angles 0, 20, 25, 45, 90, 180; two pixels have an all-zero (invalid) gt.
NORMAL_ANGLES = torch.tensor([[[0.0, 20.0, 25.0, 45.0], [90.0, 180.0, 10.0, 10.0]]])
NORMAL_GT = unit_vectors(torch.zeros(1, 2, 4))
NORMAL_GT[0, :, 1, 2:] = 0
NORMAL_PRED = unit_vectors(NORMAL_ANGLES)


def approx(value):
    return pytest.approx(value, abs=1e-5)


def test_segmentation_split_metrics_by_hand():
    acc = SEG.accumulator()
    acc.update(logits_for(SEG_PRED), SEG_GT)
    assert acc.compute() == {"miou": approx(SEG_MIOU), "pixel_acc": approx(3 / 5)}
    assert acc.confusion.tolist() == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]]


def test_segmentation_per_image_metrics_and_loss():
    gt = torch.cat([SEG_GT, torch.tensor([[[0, 0, 0], [-1, 0, 0]]]), torch.full((1, 2, 3), -1)])
    pred = logits_for(torch.cat([SEG_PRED, torch.zeros(2, 2, 3, dtype=torch.long)]))
    out = SEG.per_image_metrics(pred, gt)
    assert list(out) == ["miou", "pixel_acc", "loss"]
    assert out["miou"][:2].tolist() == [approx(SEG_MIOU), 1.0]
    assert out["pixel_acc"][:2].tolist() == [approx(3 / 5), 1.0]
    assert out["miou"][2].isnan() and out["pixel_acc"][2].isnan()
    pixel_ce = F.cross_entropy(pred, gt, ignore_index=-1, reduction="none")
    expected = pixel_ce.sum((1, 2)) / torch.tensor([5, 5, 1])
    torch.testing.assert_close(out["loss"].double(), expected, atol=1e-6, rtol=0)
    assert out["loss"][2] == 0


def test_segmentation_rejects_labels_out_of_range():
    with pytest.raises(ValueError, match="label 7"):
        SEG.accumulator().update(logits_for(SEG_PRED), torch.tensor([[[7, 0, 1], [1, -1, 0]]]))


def test_depth_metrics_by_hand():
    acc = DEPTH.accumulator()
    acc.update(DEPTH_PRED, DEPTH_GT)
    expected = {"abs_err": approx(2.2 / 3), "rel_err": approx(0.7 / 3), "delta1": approx(2 / 3)}
    assert acc.compute() == expected
    per_image = DEPTH.per_image_metrics(DEPTH_PRED, DEPTH_GT)
    assert {m: v.item() for m, v in per_image.items()} == {**expected, "loss": approx(2.2 / 3)}


def test_depth_non_positive_prediction_fails_delta1_without_nan():
    acc = DEPTH.accumulator()
    acc.update(torch.tensor([[[[-1.0, 0.0]]]]), torch.tensor([[[[1.0, 1.0]]]]))
    assert acc.compute() == {"abs_err": 1.5, "rel_err": 1.5, "delta1": 0.0}


def test_depth_split_metrics_are_pixel_weighted():
    # image 1: one valid pixel, error 4; image 2: three valid pixels, error 0
    gt = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]], [[[1.0, 1.0], [1.0, 0.0]]]])
    pred = torch.tensor([[[[5.0, 9.0], [9.0, 9.0]]], [[[1.0, 1.0], [1.0, 9.0]]]])
    acc = DEPTH.accumulator()
    acc.update(pred[:1], gt[:1])
    acc.update(pred[1:], gt[1:])
    assert acc.compute()["abs_err"] == approx(4 / 4)
    assert DEPTH.per_image_metrics(pred, gt)["abs_err"].mean() == approx(2.0)


def test_normal_metrics_by_hand():
    acc = NORMAL.accumulator()
    acc.update(NORMAL_PRED, NORMAL_GT)
    expected = {
        "mean": approx(360 / 6),
        "median": approx((25 + 45) / 2),
        "a11": approx(1 / 6),
        "a22": approx(2 / 6),
        "a30": approx(3 / 6),
    }
    assert acc.compute() == expected
    per_image = NORMAL.per_image_metrics(NORMAL_PRED, NORMAL_GT)
    cosines = torch.deg2rad(NORMAL_ANGLES[0, :, :4].flatten().double()).cos()[:6]
    assert {m: v.item() for m, v in per_image.items()} == {
        **expected,
        "loss": approx((1 - cosines).mean().item()),
    }


def test_normal_split_median_is_exact_over_all_pixels():
    acc = NORMAL.accumulator()
    first = torch.tensor([[[0.0, 20.0, 180.0, 0.0]]])
    second = torch.tensor([[[25.0, 45.0, 90.0, 0.0]]])
    gt = unit_vectors(torch.zeros(1, 1, 4))
    gt[..., 3] = 0
    acc.update(unit_vectors(first), gt)
    acc.update(unit_vectors(second), gt)
    assert acc.compute()["median"] == approx(35.0)  # per-image medians 20 and 45 average 32.5


def test_normal_activation_gives_unit_vectors():
    raw = torch.tensor([[[[3.0, 0.0]], [[0.0, 0.0]], [[4.0, 0.0]]]])  # (1, 3, 1, 2)
    out = NORMAL.activate(raw)
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([0.6, 0.0, 0.8]))
    assert out[0, :, 0, 1].tolist() == [0.0, 0.0, 0.0]
    assert SEG.activate(raw) is raw


def test_classification_metrics_and_loss():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
    target = torch.tensor([0, 2, -1])
    out = CLS.per_image_metrics(logits, target)
    assert out["accuracy"][:2].tolist() == [1.0, 0.0] and out["accuracy"][2].isnan()
    expected = F.cross_entropy(logits, target, ignore_index=-1, reduction="none")
    torch.testing.assert_close(out["loss"], expected)
    acc = CLS.accumulator()
    acc.update(logits, target)
    assert acc.compute() == {"accuracy": 0.5}


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.kind)
def test_accumulator_without_valid_pixels_gives_nan(spec):
    pred, target = no_valid_batch(spec)
    acc = spec.accumulator()
    acc.update(pred, target)
    result = acc.compute()
    assert list(result) == list(spec.metrics)
    assert all(math.isnan(v) for v in result.values())
    assert all(math.isnan(v) for v in spec.accumulator().compute().values())


def no_valid_batch(spec):
    """One sample of `spec` whose target has no valid pixel."""
    return {
        "segmentation": (torch.randn(1, 4, 2, 2), torch.full((1, 2, 2), -1)),
        "depth": (torch.rand(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)),
        "normal": (unit_vectors(torch.rand(1, 2, 2)).float(), torch.zeros(1, 3, 2, 2)),
        "classification": (torch.randn(1, 3), torch.tensor([-1])),
    }[spec.kind]


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


def valid_batch(spec, seed=0):
    """Three random samples of `spec`, with some invalid pixels; the last has none valid."""
    g = torch.Generator().manual_seed(seed)
    if spec.kind == "segmentation":
        target = torch.randint(-1, 4, (3, 3, 3), generator=g)
        target[2] = -1
        return torch.randn(3, 4, 3, 3, generator=g), target
    if spec.kind == "depth":
        target = torch.rand(3, 1, 3, 3, generator=g) * (torch.rand(3, 1, 3, 3, generator=g) > 0.3)
        target[2] = 0
        return torch.rand(3, 1, 3, 3, generator=g), target
    if spec.kind == "normal":
        target = F.normalize(torch.randn(3, 3, 3, 3, generator=g), dim=1)
        target[:, :, 0, 0] = 0
        target[2] = 0
        return torch.randn(3, 3, 3, 3, generator=g), target
    return torch.randn(3, 3, generator=g), torch.tensor([0, 2, -1])


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
        ("abs_err", "rel_err", "delta1"),
        ("mean", "median", "a11", "a22", "a30"),
        ("accuracy",),
    ]
    assert [s.primary for s in ALL] == ["miou", "delta1", "a30", "accuracy"]
    assert [s.loss_name for s in ALL] == ["cross_entropy", "masked_l1", "cosine", "cross_entropy"]
    assert all(s.higher_is_better(s.primary) for s in ALL)
    lower = {m for s in ALL for m in s.metrics if not s.higher_is_better(m)}
    assert lower == {"abs_err", "rel_err", "mean", "median"}
    with pytest.raises(ValueError, match="'miou'.*abs_err, rel_err, delta1"):
        DEPTH.higher_is_better("miou")


@pytest.mark.parametrize("spec", ALL, ids=lambda s: s.kind)
def test_dict_round_trip(spec):
    data = json.loads(json.dumps(spec.to_dict()))
    assert TaskSpec.from_dict(data) == spec
    assert data["class_names"] == list(spec.class_names)


def test_from_dict_errors_name_the_problem():
    with pytest.raises(ValueError, match="missing channels"):
        TaskSpec.from_dict({"name": "depth", "kind": "depth"})
    with pytest.raises(UnknownTaskKind, match="'edges'.*segmentation, depth, normal"):
        TaskSpec.from_dict({"name": "e", "kind": "edges", "channels": 1})
    with pytest.raises(ValueError, match="unknown keys loss"):
        TaskSpec.from_dict({**DEPTH.to_dict(), "loss": "l2"})


def test_invalid_specs_give_clear_errors():
    assert issubclass(UnknownTaskKind, ValueError) and len(KINDS) == 4
    with pytest.raises(UnknownTaskKind, match="'edges'"):
        TaskSpec("e", "edges", 1)
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


labels = st.lists(st.integers(-1, 3), min_size=6, max_size=6)


@settings(max_examples=40, deadline=None)
@given(gts=st.lists(labels, min_size=1, max_size=4), preds=st.lists(labels, min_size=4, max_size=4))
def test_segmentation_accumulator_batches_equal_concatenation(gts, preds):
    gt = torch.tensor(gts).view(-1, 2, 3)
    pred = logits_for(torch.tensor(preds[: len(gts)]).view(-1, 2, 3))
    whole, batched = SEG.accumulator(), SEG.accumulator()
    whole.update(pred, gt)
    for i in range(len(gt)):
        batched.update(pred[i : i + 1], gt[i : i + 1])
    assert torch.equal(whole.confusion, batched.confusion)
    result = whole.compute()
    assert math.isnan(result["miou"]) == bool((gt == -1).all())
    assert math.isnan(result["miou"]) or 0 <= result["miou"] <= 1
    per_image = SEG.per_image_metrics(pred, gt)["miou"]
    assert ((per_image >= 0) & (per_image <= 1) | per_image.isnan()).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=4, max_size=4), st.floats(0.01, 10.0))
def test_depth_delta1_in_unit_interval(gts, pred_value):
    gt = torch.tensor(gts).view(1, 1, 2, 2)
    acc = DEPTH.accumulator()
    acc.update(torch.full_like(gt, pred_value), gt)
    delta1 = acc.compute()["delta1"]
    assert math.isnan(delta1) == bool((gt <= 0).all())
    assert math.isnan(delta1) or 0 <= delta1 <= 1
