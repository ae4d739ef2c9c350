"""The segmentation kind: hand-computed losses and metrics on tiny tensors."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from task_helpers import SEG, approx, logits_for

SEG_GT = torch.tensor([[[0, 0, 1], [1, -1, 0]]])

SEG_PRED = torch.tensor([[[0, 1, 1], [3, 2, 0]]])

SEG_MIOU = (2 / 3 + 1 / 3 + 0) / 3


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
