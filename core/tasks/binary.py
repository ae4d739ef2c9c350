"""Shared rules of binary per-pixel kinds (saliency, edges): one logit per pixel.

pred (B, 1, H, W) logits (the activation is the identity, so losses use the logits directly and
stay finite and informative when the sigmoid saturates; metrics apply the sigmoid). target
(B, H, W) float in [0, 1] (1 = positive; soft values allowed for the loss), -1 = ignore. A pixel
is a true positive when its target is >= 0.5.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from core.tasks.base import TaskKind, no_class, per_pixel_array
from core.visual import binary_rgb


class BinaryMapKind(TaskKind):
    """Base of a binary per-pixel kind; a subclass adds its metrics (and may change the loss).

    colours: (RGB of 0, RGB of 1) for pictures; probabilities in between are blended.
    """

    loss_name = "binary_cross_entropy"
    channels = 1
    colours: ClassVar[tuple[tuple[int, int, int], tuple[int, int, int]]]

    def valid_mask(self, spec, target):
        return target >= 0

    def pixel_loss(self, spec, pred, target):
        return F.binary_cross_entropy_with_logits(pred[:, 0], target.clamp(min=0),
                                                  reduction="none")

    @staticmethod
    def probability(pred: Tensor) -> Tensor:
        """(B, 1, H, W) logits -> (B, H, W) probabilities."""
        return pred[:, 0].sigmoid()

    @staticmethod
    def positive(target: Tensor) -> Tensor:
        """(B, H, W) targets -> (B, H, W) bool, True on positive pixels."""
        return target >= 0.5

    def load(self, spec, array, size):
        """(H, W) or (H, W, 1); uint8 files are read as 0..255 -> [0, 1] (no ignore)."""
        values = per_pixel_array(array, size, 1)[0]
        if values.dtype == np.uint8:
            values = values / 255.0
        values = np.ascontiguousarray(values, np.float32)
        bad = ~(((values >= 0) & (values <= 1)) | (values == -1))
        if bad.any():
            raise ValueError(f"holds the value {float(values[bad][0])}; task {spec.name!r} expects "
                             "values in [0, 1] (1 = positive), or -1 to ignore a pixel")
        return torch.from_numpy(values)

    def render(self, spec, values, reference):
        """A target (H, W) as it is; a prediction (1, H, W) of logits by its probabilities."""
        if values.ndim == 3:
            values = 1.0 / (1.0 + np.exp(-values[0].astype(np.float64)))
        return binary_rgb(values, *self.colours)

    def explanation_score(self, spec, pred, target_class):
        """The logit of every pixel."""
        no_class(spec, target_class)
        return pred[:, 0]

    def constant_statistic(self, spec, target):
        valid = spec.valid_mask(target)
        return torch.stack([torch.where(valid, target, 0.0).double().sum(),
                            valid.sum().double()])

    def constant(self, spec, statistics):
        """The logit of the share of positive pixels (the best constant under cross-entropy),
        clipped to [1e-4, 1 - 1e-4]."""
        positives, count = sum(statistics).tolist()
        share = min(max(positives / max(count, 1.0), 1e-4), 1 - 1e-4)
        return torch.tensor([float(np.log(share / (1 - share)))])
