"""Image classification: one logit per class per image; cross-entropy; accuracy.

pred (B, C) logits; target (B,) long, < 0 = ignore. An image-level kind (`per_pixel` False).
"""

from __future__ import annotations

import numpy as np
import torch

from core.tasks.base import (
    PixelMeanKind,
    check_classes,
    class_channel,
    nll,
    register_kind,
)
from core.tasks.segmentation import Segmentation
from core.visual import THUMBNAIL_SIZE, segmentation_rgb


@register_kind
class Classification(PixelMeanKind):
    """One class per image. Folder ``class``: a scalar class id (classes from meta.json)."""

    name = "classification"
    loss_name = "cross_entropy"
    metrics = ("accuracy",)
    primary = "accuracy"
    per_pixel = False
    has_classes = True
    channels = 2
    folder = "class"

    def valid_mask(self, spec, target):
        return target >= 0

    def pixel_loss(self, spec, pred, target):
        return nll(pred, target)

    def pixel_values(self, spec, pred, target):
        return {"accuracy": (pred.argmax(1) == target).to(pred.dtype)}

    def load(self, spec, array, size):
        if array.size != 1:
            raise ValueError(f"has shape {array.shape}; expected a scalar class id")
        label = np.asarray(array).reshape(()).astype(np.int64)
        check_classes(label, spec)
        return torch.tensor(int(label))

    def render(self, spec, values, reference):
        """A flat tile of the class colour (a prediction's argmax)."""
        label = values.argmax(0) if values.ndim > 0 else values
        return segmentation_rgb(np.full((THUMBNAIL_SIZE, THUMBNAIL_SIZE), label), spec.channels)

    def explanation_score(self, spec, pred, target_class):
        return class_channel(spec, pred, target_class)

    constant_statistic = Segmentation.constant_statistic
    constant = Segmentation.constant
    random_target = Segmentation.random_target
