"""The edges kind: class-balanced cross-entropy and the F-score at 0.5, by hand."""

import math

import numpy as np
import torch
from task_helpers import EDGE, approx, binary_logits

# Image 1: valid pixels (truth, probability): (1, 0.9) TP, (0, 0.7) FP, (0, 0.2), (1, 0.4) FN,
#   (0, 0.1); the ignored pixel says 0.9. -> P 1/2, R 1/2, F 1/2.
# Image 2: one edge, found: TP 1 -> 1, 1, 1. Image 3: no edge and none claimed -> 1, 1, 1.
# Image 4: every pixel ignored -> NaN. Pooled over the split: TP 2, FP 1, FN 1 -> 2/3 each.
TARGET = torch.tensor([[[1.0, 0.0, 0.0], [1.0, -1.0, 0.0]],
                       [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
                       [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                       [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]])
PROB = torch.tensor([[[0.9, 0.7, 0.2], [0.4, 0.9, 0.1]],
                     [[0.1, 0.1, 0.1], [0.1, 0.1, 0.8]],
                     [[0.1, 0.1, 0.1], [0.1, 0.1, 0.1]],
                     [[0.9, 0.9, 0.9], [0.9, 0.9, 0.9]]])


def test_per_image_and_split_f_score_by_hand():
    out = EDGE.per_image_metrics(binary_logits(PROB), TARGET)
    assert out["f_score"][:3].tolist() == [0.5, 1.0, 1.0]
    assert out["precision"][:3].tolist() == [0.5, 1.0, 1.0]
    assert out["recall"][:3].tolist() == [0.5, 1.0, 1.0]
    assert all(out[m][3].isnan() for m in EDGE.metrics)
    acc = EDGE.accumulator()
    for i in range(4):
        acc.update(binary_logits(PROB[i:i + 1]), TARGET[i:i + 1])
    assert acc.compute() == {"f_score": approx(2 / 3), "precision": approx(2 / 3),
                             "recall": approx(2 / 3)}


def test_nothing_claimed_against_real_edges_scores_zero():
    acc = EDGE.accumulator()
    acc.update(binary_logits(torch.full((1, 1, 2), 0.1)), torch.tensor([[[1.0, 0.0]]]))
    assert acc.compute() == {"f_score": 0.0, "precision": 1.0, "recall": 0.0}


def test_class_balanced_loss_by_hand():
    # Image 1: 2 edge pixels of 5 valid -> beta = 3/5 on edges, 2/5 on the rest.
    pos = -math.log(0.9) - math.log(0.4)
    neg = -math.log(1 - 0.7) - math.log(1 - 0.2) - math.log(1 - 0.1)
    losses = EDGE.per_sample_loss(binary_logits(PROB), TARGET)
    assert losses[0].item() == approx((0.6 * pos + 0.4 * neg) / 5)
    # Image 2: 1 of 6 -> beta = 5/6; image 3 has no edge (beta = 1): zero loss, as in HED.
    neg2 = -5 * math.log(0.9)
    assert losses[1].item() == approx((5 / 6 * -math.log(0.8) + 1 / 6 * neg2) / 6)
    assert losses[2].item() == 0 and losses[3].item() == 0


def test_constant_and_loader():
    kind = EDGE.task_kind
    stats = [kind.constant_statistic(EDGE, TARGET)]
    share = 3 / 17  # 3 edge pixels of 17 valid
    assert kind.constant(EDGE, stats).tolist() == [approx(math.log(share / (1 - share)))]
    assert EDGE.load_target(np.array([[0.0, 1.0], [-1.0, 0.5]]), (2, 2)).tolist() == [
        [0.0, 1.0], [-1.0, 0.5]]
    drawn = EDGE.render(TARGET[0].numpy())
    assert tuple(drawn[0, 0]) == (25, 25, 25) and tuple(drawn[0, 1]) == (255, 255, 255)
