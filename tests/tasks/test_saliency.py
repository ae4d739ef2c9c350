"""The saliency kind: maxF and IoU as in the MTI-Net PASCAL-Context evaluation, by hand."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from task_helpers import SAL, approx, binary_logits

from core.tasks.saliency import THRESHOLDS

# Image 1: 5 valid pixels; positives have probabilities 0.95, 0.62, 0.27, negatives 0.32, 0.1
# (the ignored pixel says 0.99). Precision / recall per threshold t:
#   t in {0.2, 0.25}: TP 3, FP 1         -> P 3/4, R 1,   F 6/7
#   t = 0.3:          TP 2, FP 1, FN 1   -> P 2/3, R 2/3, F 2/3
#   t in 0.35..0.6:   TP 2, FN 1         -> P 1,   R 2/3, F 4/5
#   t >= 0.65:        TP 1, FN 2         -> P 1,   R 1/3, F 1/2
# maxF 6/7; IoU at 0.5: 2 / 3.
# Image 2: no positive, nothing claimed -> P = R = 0 (empty denominators), F 0; IoU 1 (both empty).
# Image 3: every pixel ignored -> left out.
# Split: mean P and R over images 1-2, then F per threshold: t <= 0.25: P 3/8, R 1/2 -> F 3/7;
# t = 0.3: F 1/3; 0.35..0.6: P 1/2, R 1/3 -> F 2/5; t >= 0.65: P 1/2, R 1/6 -> F 1/4. maxF 3/7.
TARGET = torch.tensor([[[1.0, 1.0, 0.0], [0.0, -1.0, 1.0]],
                       [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                       [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]])
PROB = torch.tensor([[[0.95, 0.62, 0.32], [0.1, 0.99, 0.27]],
                     [[0.1, 0.1, 0.1], [0.1, 0.1, 0.1]],
                     [[0.9, 0.9, 0.9], [0.9, 0.9, 0.9]]])


def test_thresholds_are_mti_net_s():
    torch.testing.assert_close(THRESHOLDS, torch.tensor(np.linspace(0.2, 0.9, 15)))


def test_per_image_metrics_by_hand():
    out = SAL.per_image_metrics(binary_logits(PROB), TARGET)
    assert list(out) == ["maxf", "iou", "loss"]
    assert out["maxf"][:2].tolist() == [approx(6 / 7), 0.0]
    assert out["iou"][:2].tolist() == [approx(2 / 3), 1.0]
    assert out["maxf"][2].isnan() and out["iou"][2].isnan() and out["loss"][2] == 0


def test_split_metrics_average_precision_and_recall_over_images():
    acc = SAL.accumulator()
    acc.update(binary_logits(PROB[:1]), TARGET[:1])
    acc.update(binary_logits(PROB[1:]), TARGET[1:])
    assert acc.compute() == {"maxf": approx(3 / 7), "iou": approx(5 / 6)}


def test_loss_is_binary_cross_entropy_of_the_logits_over_valid_pixels():
    logits = binary_logits(PROB)
    valid = TARGET >= 0
    pixel = F.binary_cross_entropy(PROB.double(), TARGET.clamp(min=0).double(), reduction="none")
    expected = torch.where(valid, pixel, 0.0).sum((1, 2)) / valid.sum((1, 2)).clamp(min=1)
    torch.testing.assert_close(SAL.per_sample_loss(logits, TARGET.double()), expected)


def test_saturated_logits_keep_a_finite_loss_and_gradient():
    logits = torch.tensor([[[[80.0, -80.0]]]], requires_grad=True)
    loss = SAL.loss(logits, torch.tensor([[[0.0, 1.0]]]))
    loss.backward()
    assert loss.item() == pytest.approx(80.0) and torch.isfinite(logits.grad).all()
    assert logits.grad.abs().min() > 0.2  # the wrong, confident pixels still get pushed


def test_constant_random_target_render_score_and_loader():
    kind = SAL.task_kind
    stats = [kind.constant_statistic(SAL, TARGET[:1]), kind.constant_statistic(SAL, TARGET[1:])]
    share = 3 / 11  # 3 positive pixels of 11 valid
    assert kind.constant(SAL, stats).tolist() == [approx(math.log(share / (1 - share)))]
    donor = torch.stack([torch.zeros(2, 3), torch.ones(2, 3)])
    assert torch.equal(SAL.random_target(TARGET, donor), donor[[0, 1, 0]])
    truth, pred = SAL.render(TARGET[0].numpy()), SAL.render(np.full((1, 2, 3), 30.0))
    assert truth.shape == pred.shape == (2, 3, 3) and truth.dtype == np.uint8
    assert tuple(truth[0, 0]) == (255, 255, 255) and tuple(truth[0, 2]) == (40, 40, 40)
    assert tuple(truth[1, 1]) == (0, 0, 0) and tuple(pred[0, 0]) == (255, 255, 255)
    logits = binary_logits(PROB)
    assert torch.equal(SAL.explanation_score(logits), logits[:, 0])
    with pytest.raises(ValueError, match="has no classes.*target_class=None"):
        SAL.explanation_score(logits, 0)
    loaded = SAL.load_target(np.array([[0, 255], [255, 0]], dtype=np.uint8), (2, 2))
    assert loaded.dtype == torch.float32 and loaded.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    with pytest.raises(ValueError, match=r"value 2\.0.*\[0, 1\].*-1 to ignore"):
        SAL.load_target(np.full((2, 2), 2.0), (2, 2))
    with pytest.raises(ValueError, match=r"has shape \(2, 3\) but its image is 2x2"):
        SAL.load_target(np.zeros((2, 3)), (2, 2))
