"""Semantic segmentation: one logit per class at every pixel; cross-entropy; mIoU and pixel accuracy.

pred (B, C, H, W) logits; target (B, H, W) long, -1 = ignore. Metrics as LibMTL / MTAN: one
confusion matrix over the valid pixels of the whole split; IoU per class; mIoU = mean over the
classes with a non-empty union; pixel accuracy.
"""

from __future__ import annotations

import re

import numpy as np
import torch
from torch import Tensor

from core.tasks.base import (
    FoundTask,
    MetricAccumulator,
    TaskKind,
    check_classes,
    class_channel,
    nll,
    per_pixel_array,
    register_kind,
)
from core.visual import segmentation_rgb

NYUV2_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture",
                 "sofa", "table", "tv", "wall", "window")
CITYSCAPES_CLASSES = {
    7: ("flat", "construction", "object", "nature", "sky", "human", "vehicle"),
    19: ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
         "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus",
         "train", "motorcycle", "bicycle"),
}
_LABEL_FOLDER = re.compile(r"label(?:_(\d+))?")


def confusion(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Confusion matrix of each image over its valid pixels; rows = truth, columns = prediction.

    logits: (B, C, H, W); target: (B, H, W) long; valid: (B, H, W) bool -> (B, C, C) long.
    """
    b, c = logits.shape[:2]
    bad = valid & ((target < 0) | (target >= c))
    if bool(bad.any()):
        raise ValueError(
            f"segmentation target holds label {int(target[bad][0])} but the task has "
            f"channels={c}; labels must lie in 0..{c - 1}, or be -1 to ignore a pixel"
        )
    image = torch.arange(b, device=target.device).view(b, 1, 1)
    cell = (image * c + target) * c + logits.argmax(1)
    cell = torch.where(valid, cell, b * c * c)  # one overflow bin collects the ignored pixels
    return torch.bincount(cell.flatten(), minlength=b * c * c + 1)[:-1].view(b, c, c)


def confusion_scores(counts: Tensor) -> tuple[Tensor, Tensor]:
    """mIoU and pixel accuracy of (..., C, C) confusion counts -> two (...) float64 tensors.

    IoU = diag / (row + col - diag); classes with an empty union are NaN and left out of the
    mean; NaN everywhere (no valid pixel) gives NaN.
    """
    counts = counts.double()
    diag = counts.diagonal(dim1=-2, dim2=-1)
    iou = diag / (counts.sum(-1) + counts.sum(-2) - diag)
    return iou.nanmean(-1), diag.sum(-1) / counts.sum((-2, -1))


class ConfusionAccumulator(MetricAccumulator):
    """One confusion matrix over the whole split."""

    def __init__(self, spec) -> None:
        super().__init__(spec)
        self.confusion = torch.zeros(spec.channels, spec.channels, dtype=torch.long)  # (C, C)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        self.confusion += confusion(pred, target, self.spec.valid_mask(target)).sum(0).cpu()

    def compute(self) -> dict[str, float]:
        miou, pixel_acc = confusion_scores(self.confusion)
        return {"miou": miou.item(), "pixel_acc": pixel_acc.item()}


@register_kind
class Segmentation(TaskKind):
    """Per-pixel classes. Folders: ``label`` (13 NYUv2 classes) or ``label_N`` (N classes)."""

    name = "segmentation"
    loss_name = "cross_entropy"
    metrics = ("miou", "pixel_acc")
    primary = "miou"
    has_classes = True
    channels = 2
    folder = "label"

    @property
    def folder_hint(self) -> str:
        return "label, label_N"

    def valid_mask(self, spec, target):
        return target != -1

    def pixel_loss(self, spec, pred, target):
        return nll(pred, target)

    def per_image_metrics(self, spec, pred, target):
        miou, pixel_acc = confusion_scores(confusion(pred, target, spec.valid_mask(target)))
        return {"miou": miou, "pixel_acc": pixel_acc}

    def accumulator(self, spec):
        return ConfusionAccumulator(spec)

    def load(self, spec, array, size):
        values = per_pixel_array(array, size, 1)[0]
        if np.issubdtype(values.dtype, np.floating) and not np.array_equal(values, np.round(values)):
            raise ValueError(f"holds fractional class ids such as {values[values != np.round(values)][0]}; "
                             "expected integer class ids (-1 = ignore)")
        labels = values.astype(np.int64)
        check_classes(labels, spec)
        return torch.from_numpy(labels)

    def discover(self, folders):
        labels = [f for f in folders if _LABEL_FOLDER.fullmatch(f)]
        found = []
        for folder in labels:
            number = _LABEL_FOLDER.fullmatch(folder).group(1)
            classes = int(number) if number else len(NYUV2_CLASSES)
            names = (NYUV2_CLASSES if not number
                     else CITYSCAPES_CLASSES.get(classes, tuple(f"class_{i}" for i in range(classes))))
            name = self.name if len(labels) == 1 or not number else f"{self.name}_{number}"
            found.append(FoundTask(name, folder, classes, names))
        return found

    def render(self, spec, values, reference):
        labels = values.argmax(0) if values.ndim > 2 else values  # logits -> their argmax
        return segmentation_rgb(labels, spec.channels)

    def explanation_score(self, spec, pred, target_class):
        return class_channel(spec, pred, target_class)

    def constant_statistic(self, spec, target):
        valid = spec.valid_mask(target)
        return torch.bincount(target[valid].long(), minlength=spec.channels)[: spec.channels]

    def constant(self, spec, statistics):
        """Logits +-10 for the most frequent class."""
        logits = torch.full((spec.channels,), -10.0)
        logits[int(sum(statistics).argmax())] = 10.0
        return logits

    def random_target(self, spec, target, donor, generator):
        """Every labelled pixel gets a random *other* class, drawn afresh; ignored stay ignored."""
        shift = torch.randint(1, spec.channels, target.shape, generator=generator)
        other = (target + shift.to(target.device)) % spec.channels
        return torch.where(spec.valid_mask(target), other, target)
