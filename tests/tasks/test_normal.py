"""The normal kind: hand-computed angular metrics on tiny tensors."""

import torch
from task_helpers import NORMAL, SEG, approx, unit_vectors

NORMAL_ANGLES = torch.tensor([[[0.0, 20.0, 25.0, 45.0], [90.0, 180.0, 10.0, 10.0]]])

NORMAL_GT = unit_vectors(torch.zeros(1, 2, 4))
NORMAL_GT[0, :, 1, 2:] = 0
NORMAL_PRED = unit_vectors(NORMAL_ANGLES)


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
