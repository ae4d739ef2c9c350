"""neggrad_plus: NegGrad+, weighted descent on what must stay and ascent on the forget pairs.

    loss = beta * (L_R + L_K) - (1 - beta) * L_F

from Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023), where it is the
strongest simple baseline. Multi-task reading: L_R sums every task's loss on retain instances,
L_K the kept tasks' losses on the forget instances (partial mode; their labels stay), L_F the target
tasks' losses on the forget instances. Kept-task heads are not reached by L_F, so they only ever
get the descent term.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.unlearning.base import StepUnlearner, UnlearnConfig, knob, register
from core.unlearning.search import SHARED, Range


@dataclass
class NegGradPlusConfig(UnlearnConfig):
    beta: float = knob(0.9, 0.0, 1.0, "weight of descent on retain and kept pairs; 1 - beta "
                                      "weighs the ascent on forget pairs")


@register
class NegGradPlus(StepUnlearner):
    name = "neggrad_plus"
    config_class = NegGradPlusConfig
    summary = "beta x descent on retain and kept pairs, (1 - beta) x ascent on forget pairs"
    search_space = {**SHARED, "beta": Range(0.5, 0.99)}

    def step(self, ctx):
        retain_losses = ctx.retain_forward_losses(ctx.retain_batch())
        forget_losses, kept_losses = ctx.forget_and_kept_losses(ctx.forget_batch())
        keep = sum(retain_losses.values()) + sum(kept_losses.values(), 0.0)
        beta = self.config.beta
        (beta * keep + (1 - beta) * self.forget_objective(ctx, forget_losses)).backward()
        return forget_losses, retain_losses

    def forget_objective(self, ctx, forget_losses):
        """The forget term the optimiser descends: -sum_t L_F,t (ascent)."""
        return -sum(forget_losses.values())
