"""l1_sparse: fine-tuning on what must stay with an l1 penalty on every weight, decaying to zero.

Jia et al., "Model Sparsity Can Simplify Machine Unlearning" (NeurIPS 2023), the "l1-sparse" MU
variant: each step descends

    L_R + L_K + gamma_t * ||theta||_1,    gamma_t = gamma * (1 - (t - 1) / steps), t = 1..steps

(the reference code's linear decay, its epochs made steps), so sparsity is pushed hardest while the
model is still being repaired and released at the end. L_R sums every task's loss on retain
instances and L_K the kept tasks' losses on the forget instances (partial mode: those labels
stay), exactly `finetune`'s objective; F is never seen. The penalty's subgradient gamma_t *
sign(theta) is added to every parameter's gradient (zero at a weight that is exactly zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.unlearning.base import UnlearnConfig, knob, register
from core.unlearning.finetune import Finetune
from core.unlearning.search import SHARED, Range


def l1_schedule(gamma: float, steps: int) -> list[float]:
    """The penalty weight of each step: gamma * (1 - (t - 1) / steps) for t = 1..steps."""
    return [gamma * (1 - t / steps) for t in range(steps)]


@dataclass
class L1SparseConfig(UnlearnConfig):
    gamma: float = knob(5e-4, 0.0, 1.0, "initial weight of the l1 penalty, decayed linearly to 0")


@register
class L1Sparse(Finetune):
    name = "l1_sparse"
    config_class = L1SparseConfig
    summary = "descent on retain and kept pairs plus a decaying l1 penalty on the weights"
    search_space = {**SHARED, "gamma": Range(1e-5, 1e-2, log=True)}

    def prepare(self, ctx):
        self.gammas = iter(l1_schedule(self.config.gamma, self.config.steps))

    def step(self, ctx):
        losses = super().step(ctx)
        gamma = next(self.gammas)
        with torch.no_grad():
            for parameter in ctx.parameters():
                penalty = gamma * parameter.sign()
                parameter.grad = penalty if parameter.grad is None else parameter.grad + penalty
        return losses
