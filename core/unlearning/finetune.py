"""finetune: plain descent on what must stay (retain pairs R and kept pairs K); F is never seen,
so forgetting comes only from catastrophic drift."""

from __future__ import annotations

from core.unlearning.base import StepUnlearner, register
from core.unlearning.search import SHARED


@register
class Finetune(StepUnlearner):
    name = "finetune"
    summary = "descent on retain and kept pairs only"
    search_space = SHARED

    def step(self, ctx):
        retain_losses = ctx.retain_forward_losses(ctx.retain_batch())
        forget_losses, kept_losses = ctx.forget_and_kept_losses(ctx.forget_batch())
        (sum(retain_losses.values()) + sum(kept_losses.values(), 0.0)).backward()
        return forget_losses, retain_losses
