"""Edges (PASCAL-Context style): is each pixel on a boundary? F-score at a fixed threshold.

Binary per-pixel (see `core.tasks.binary`): pred (B, 1, H, W) logits, target (B, H, W) in [0, 1],
-1 = ignore.

Loss: class-balanced binary cross-entropy (HED, Xie & Tu 2015), per image over its valid
pixels: beta = |negatives| / |valid| (soft targets count fractionally), positives weighted by
beta and negatives by 1 - beta, so the rare edge pixels weigh as much as the rest; the mean over
the valid pixels. An image without any edge pixel has beta = 1 and so a zero loss, as in HED.

Metrics, a simplified ODS F-score: one fixed threshold, probability > 0.5, and exact pixel
matches (no distance tolerance; the BSDS tolerance of 0.0075 of the diagonal is under one pixel
at 64x64), with true positives, false positives and false negatives pooled over the whole split
as ODS pools them: precision = TP / (TP + FP) (1 when nothing is claimed), recall = TP / (TP + FN)
(1 when there is nothing to find), f_score = 2 TP / (2 TP + FP + FN) (1 when both are empty).
Per image, the same on that image alone; NaN without a valid pixel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from core.tasks.base import MetricAccumulator, ratio, register_kind, sum_count
from core.tasks.binary import BinaryMapKind

THRESHOLD = 0.5


def counts(prob: Tensor, positive: Tensor, valid: Tensor) -> Tensor:
    """(B, H, W) probabilities, positives, valid -> (B, 4) float64: TP, FP, FN, valid pixels."""
    claimed = (prob > THRESHOLD) & valid
    truth = positive & valid
    b = prob.shape[0]
    return torch.stack([(claimed & truth).reshape(b, -1).sum(1), (claimed & ~truth).reshape(b, -1).sum(1),
                        (~claimed & truth).reshape(b, -1).sum(1), valid.reshape(b, -1).sum(1)],
                       dim=1).double()


def scores(tp: Tensor, fp: Tensor, fn: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """f_score, precision and recall from counts (any matching shapes); NaN where valid is 0."""
    nan = torch.full_like(tp, math.nan)
    out = {"f_score": ratio(2 * tp, 2 * tp + fp + fn, 1.0),
           "precision": ratio(tp, tp + fp, 1.0),
           "recall": ratio(tp, tp + fn, 1.0)}
    return {m: torch.where(valid > 0, v, nan) for m, v in out.items()}


class EdgeAccumulator(MetricAccumulator):
    """TP, FP, FN and valid pixels, pooled over the split."""

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.counts = torch.zeros(4, dtype=torch.float64)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        self.counts += counts(BinaryMapKind.probability(pred), BinaryMapKind.positive(target),
                              self.spec.valid_mask(target)).sum(0).cpu()

    def compute(self) -> dict[str, float]:
        return {m: v.item() for m, v in scores(*self.counts).items()}


@register_kind
class Edges(BinaryMapKind):
    """Boundary maps. Folder ``edge``: (H, W) in [0, 1] (or uint8 0..255), -1 = ignore."""

    name = "edges"
    loss_name = "balanced_binary_cross_entropy"
    metrics = ("f_score", "precision", "recall")
    primary = "f_score"
    folder = "edge"
    colours = ((255, 255, 255), (25, 25, 25))

    def pixel_loss(self, spec, pred, target):
        valid = spec.valid_mask(target)
        soft = target.clamp(min=0)
        positives, count = sum_count(soft, valid)
        beta = (1 - positives / count.clamp(min=1)).view(-1, *[1] * (soft.dim() - 1))
        logits = pred[:, 0]
        return (beta * soft * F.softplus(-logits)
                + (1 - beta) * (1 - soft) * F.softplus(logits))

    def per_image_metrics(self, spec, pred, target):
        found = counts(self.probability(pred), self.positive(target), spec.valid_mask(target))
        return scores(*found.unbind(1))

    def accumulator(self, spec):
        return EdgeAccumulator(spec)
