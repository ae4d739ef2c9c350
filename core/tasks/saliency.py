"""Saliency (PASCAL-Context style): is each pixel part of a salient object? maxF and IoU.

Binary per-pixel (see `core.tasks.binary`): pred (B, 1, H, W) logits, target (B, H, W) in [0, 1],
-1 = ignore; loss: binary cross-entropy of the logits. Metrics follow the MTI-Net / ASTMT
PASCAL-Context evaluation (``eval_sal``), on sigmoid probabilities p and positives g = target >= 0.5:

- for each threshold t in `THRESHOLDS` (15 steps from 0.2 to 0.9), each image's precision
  TP / (TP + FP) and recall TP / (TP + FN) of {p > t} over its valid pixels (0 for an empty
  denominator); over a split, precision and recall are averaged over the images, then
  F(t) = 2 P R / (P + R) (0 when P + R = 0); **maxf** = max over t of F(t);
- **iou**: each image's IoU of {p > 0.5} and the positives (1 when both are empty), averaged
  over the images.

Per image, the same formulas on that image alone. Images without a valid pixel are left out
(their per-image metrics are NaN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from core.tasks.base import MetricAccumulator, ratio, register_kind
from core.tasks.binary import BinaryMapKind

THRESHOLDS = torch.linspace(0.2, 0.9, 15, dtype=torch.float64)
IOU_THRESHOLD = 0.5


def f_measure(precision: Tensor, recall: Tensor) -> Tensor:
    """2 P R / (P + R), 0 where P + R = 0."""
    return ratio(2 * precision * recall, precision + recall, 0.0)


def image_scores(prob: Tensor, positive: Tensor, valid: Tensor) -> dict[str, Tensor]:
    """Per-image precision and recall at every threshold, IoU at 0.5, and which images count.

    prob: (B, H, W) probabilities; positive, valid: (B, H, W) bool.
    Returns {"precision": (B, T), "recall": (B, T), "iou": (B,), "counted": (B,) bool}, float64.
    """
    b = prob.shape[0]
    prob = prob.double().reshape(b, 1, -1)
    truth = (positive & valid).reshape(b, 1, -1)
    valid = valid.reshape(b, 1, -1)
    thresholds = torch.cat([THRESHOLDS, torch.tensor([IOU_THRESHOLD], dtype=torch.float64)])
    claimed = (prob > thresholds.to(prob.device).view(1, -1, 1)) & valid  # (B, T + 1, N)
    tp = (claimed & truth).sum(-1).double()
    fp = (claimed & ~truth).sum(-1).double()
    fn = (~claimed & truth).sum(-1).double()
    return {"precision": ratio(tp, tp + fp, 0.0)[:, :-1],
            "recall": ratio(tp, tp + fn, 0.0)[:, :-1],
            "iou": ratio(tp, tp + fp + fn, 1.0)[:, -1],
            "counted": valid.any(-1)[:, 0]}


class SaliencyAccumulator(MetricAccumulator):
    """Sums of per-image precision and recall (per threshold) and IoU, over counted images."""

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.precision = torch.zeros(len(THRESHOLDS), dtype=torch.float64)
        self.recall = torch.zeros(len(THRESHOLDS), dtype=torch.float64)
        self.iou = 0.0
        self.images = 0

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        scores = image_scores(BinaryMapKind.probability(pred), BinaryMapKind.positive(target),
                              self.spec.valid_mask(target))
        counted = scores["counted"]
        self.precision += scores["precision"][counted].sum(0).cpu()
        self.recall += scores["recall"][counted].sum(0).cpu()
        self.iou += scores["iou"][counted].sum().item()
        self.images += int(counted.sum())

    def compute(self) -> dict[str, float]:
        if self.images == 0:
            return {"maxf": math.nan, "iou": math.nan}
        curve = f_measure(self.precision / self.images, self.recall / self.images)
        return {"maxf": curve.max().item(), "iou": self.iou / self.images}


@register_kind
class Saliency(BinaryMapKind):
    """Salient-object masks. Folder ``saliency``: (H, W) in [0, 1] (or uint8 0..255), -1 = ignore."""

    name = "saliency"
    metrics = ("maxf", "iou")
    primary = "maxf"
    folder = "saliency"
    colours = ((40, 40, 40), (255, 255, 255))

    def per_image_metrics(self, spec, pred, target):
        scores = image_scores(self.probability(pred), self.positive(target),
                              spec.valid_mask(target))
        nan = torch.tensor(math.nan, dtype=torch.float64, device=pred.device)
        best = f_measure(scores["precision"], scores["recall"]).max(1).values
        return {"maxf": torch.where(scores["counted"], best, nan),
                "iou": torch.where(scores["counted"], scores["iou"], nan)}

    def accumulator(self, spec):
        return SaliencyAccumulator(spec)
