"""finetune: plain descent on what must stay (retain pairs R and kept pairs K); F is never seen,
so forgetting comes only from catastrophic drift."""

from __future__ import annotations

from core.unlearning.base import StepUnlearner, register


@register
class Finetune(StepUnlearner):
    name = "finetune"
    summary = "descent on retain and kept pairs only"

    def step(self, ctx):
        retain = ctx.retain_batch()
        forget = ctx.forget_batch()
        with ctx.autocast():
            retain_losses = ctx.retain_losses(ctx.model(retain["image"]), retain)
            forget_out = ctx.model(forget["image"])
            kept_losses = ctx.kept_losses(forget_out, forget)
            forget_losses = ctx.forget_losses(forget_out, forget)
        (sum(retain_losses.values()) + sum(kept_losses.values(), 0.0)).backward()
        return forget_losses, retain_losses
