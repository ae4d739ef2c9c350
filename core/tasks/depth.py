"""Depth: one value per pixel; masked L1; abs err, rel err and delta1 over valid pixels.

pred (B, 1, H, W); target (B, 1, H, W), <= 0 = invalid (NYUv2: metres; Cityscapes: inverse
depth). Metrics as LibMTL / MTAN, pixel-weighted over the split: abs err = mean |p - g|; rel err
= mean |p - g| / g; delta1 = share of pixels with max(p/g, g/p) < 1.25.
"""

from __future__ import annotations

import numpy as np
import torch

from core.tasks.base import PixelMeanKind, no_class, per_pixel_array, register_kind
from core.visual import depth_rgb


@register_kind
class Depth(PixelMeanKind):
    """Per-pixel depth. Folder ``depth``: (H, W, 1) or (H, W), 0 = invalid."""

    name = "depth"
    loss_name = "masked_l1"
    metrics = ("abs_err", "rel_err", "delta1")
    primary = "delta1"
    lower_is_better = frozenset({"abs_err", "rel_err"})
    channels = 1
    folder = "depth"

    def valid_mask(self, spec, target):
        return target[:, 0] > 0

    def pixel_loss(self, spec, pred, target):
        return (pred - target).abs()[:, 0]

    def pixel_values(self, spec, pred, target):
        """Invalid pixels (g <= 0) get finite filler values. A prediction p <= 0 is clamped to
        the smallest positive float, so it fails delta1 instead of dividing by zero."""
        p, g = pred[:, 0], target[:, 0]
        g = torch.where(g > 0, g, 1.0)
        p_pos = p.clamp(min=torch.finfo(p.dtype).tiny)
        err = (p - g).abs()
        ratio = torch.maximum(p_pos / g, g / p_pos)
        return {"abs_err": err, "rel_err": err / g, "delta1": (ratio < 1.25).to(p.dtype)}

    def load(self, spec, array, size):
        return torch.from_numpy(np.ascontiguousarray(per_pixel_array(array, size, 1), np.float32))

    def render(self, spec, values, reference):
        """Viridis on the valid range of `reference` (so a prediction and its truth share one
        scale), default its own."""
        scale = values if reference is None else reference
        valid = scale[scale > 0]
        return depth_rgb(values[0], *((valid.min(), valid.max()) if valid.size else (None, None)))

    def explanation_score(self, spec, pred, target_class):
        no_class(spec, target_class)
        return pred.mean(1)

    def constant_statistic(self, spec, target):
        return target[:, 0][spec.valid_mask(target)]

    def constant(self, spec, statistics):
        """The median valid depth."""
        return torch.cat(list(statistics)).median().reshape(1)
