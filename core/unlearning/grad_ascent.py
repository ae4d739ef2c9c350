"""grad_ascent: gradient ascent on the forget pairs, nothing else (fast, interferes freely)."""

from __future__ import annotations

import torch

from core.unlearning.base import StepUnlearner, register
from core.unlearning.search import SHARED


@register
class GradAscent(StepUnlearner):
    name = "grad_ascent"
    summary = "ascent on forget pairs"
    search_space = SHARED

    def step(self, ctx):
        forget = ctx.forget_batch()
        with ctx.autocast():
            forget_losses = ctx.forget_losses(ctx.model(forget["image"]), forget)
        (-sum(forget_losses.values())).backward()
        with torch.no_grad(), ctx.autocast():
            retain = ctx.retain_batch()
            retain_losses = ctx.retain_losses(ctx.model(retain["image"]), retain)
        return forget_losses, retain_losses
