"""Surface normals: a unit vector per pixel; 1 - cosine; angular error statistics.

pred (B, 3, H, W) unit vectors (the head's output normalised); target (B, 3, H, W) unit,
all-zero = invalid. Metrics as LibMTL / MTAN: angle = degrees(acos(clamp(<p/|p|, g>, -1, 1)));
mean and median (exact, over every valid pixel of the split); A11 / A22 / A30 = share of pixels
under 11.25 / 22.5 / 30 degrees.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.tasks.base import PixelMeanKind, no_class, per_pixel_array, register_kind
from core.visual import normals_rgb

_EPS = 1e-12


@register_kind
class Normal(PixelMeanKind):
    """Per-pixel unit normals. Folder ``normal``: (H, W, 3), all-zero = invalid."""

    name = "normal"
    loss_name = "cosine"
    metrics = ("mean", "median", "a11", "a22", "a30")
    primary = "a30"
    lower_is_better = frozenset({"mean", "median"})
    medians = ("median",)
    channels = 3
    folder = "normal"

    def activate(self, spec, raw):
        return F.normalize(raw, dim=1, eps=_EPS)

    def valid_mask(self, spec, target):
        return (target != 0).any(1)

    def pixel_loss(self, spec, pred, target):
        return 1 - (pred * target).sum(1)

    def pixel_values(self, spec, pred, target):
        cos = (F.normalize(pred, dim=1, eps=_EPS) * target).sum(1).clamp(-1, 1)
        angle = torch.rad2deg(torch.acos(cos))
        return {
            "mean": angle,
            "median": angle,
            "a11": (angle < 11.25).to(angle.dtype),
            "a22": (angle < 22.5).to(angle.dtype),
            "a30": (angle < 30).to(angle.dtype),
        }

    def load(self, spec, array, size):
        return torch.from_numpy(np.ascontiguousarray(per_pixel_array(array, size, 3), np.float32))

    def render(self, spec, values, reference):
        return normals_rgb(values)

    def explanation_score(self, spec, pred, target_class):
        no_class(spec, target_class)
        return pred.mean(1)

    def constant_statistic(self, spec, target):
        return target.permute(0, 2, 3, 1)[spec.valid_mask(target)]

    def constant(self, spec, statistics):
        """The normalised mean valid normal."""
        mean = torch.cat(list(statistics)).mean(dim=0)
        return mean / mean.norm().clamp_min(1e-8)
