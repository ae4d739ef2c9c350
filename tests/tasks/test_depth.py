"""The depth kind: hand-computed metrics on tiny tensors."""

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from task_helpers import DEPTH, approx

DEPTH_GT = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]]], dtype=torch.float64)

DEPTH_PRED = torch.tensor([[[[1.2, 2.0], [2.0, 5.0]]]], dtype=torch.float64)


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

@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.0, 10.0), min_size=4, max_size=4), st.floats(0.01, 10.0))
def test_depth_delta1_in_unit_interval(gts, pred_value):
    gt = torch.tensor(gts).view(1, 1, 2, 2)
    acc = DEPTH.accumulator()
    acc.update(torch.full_like(gt, pred_value), gt)
    delta1 = acc.compute()["delta1"]
    assert math.isnan(delta1) == bool((gt <= 0).all())
    assert math.isnan(delta1) or 0 <= delta1 <= 1
