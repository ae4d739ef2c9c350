"""pcgrad: forget ascent with PCGrad conflict removal (Yu et al. 2020) against each task's retain
gradient, on the shared parameters, plus an optional retain descent term.

Conflict is judged on the direction the optimiser descends: the ascent direction -grad L_F
conflicts with a task gradient g_t when <-grad L_F, g_t> < 0, i.e. when ascending the forget loss
would raise that task's retain loss; it then loses its component along g_t. The tasks kept are
every task on retain data and, in partial mode, the kept tasks on the forget instances; they are
visited in a random order each step, as in PCGrad. Heads are task-specific and get no projection:
a target head gets the forget term, every head gets the retain term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.unlearning.base import StepUnlearner, UnlearnConfig, knob, register
from core.unlearning.gradients import flatten, gradients, set_grads, unflatten
from core.unlearning.projections import pcgrad
from core.unlearning.search import SHARED, Range
from core.unlearning.subspaces import shared_names


@dataclass
class PCGradConfig(UnlearnConfig):
    retain_weight: float = knob(1.0, 0.0, 100.0, "weight of the retain descent term")


@register
class PCGrad(StepUnlearner):
    name = "pcgrad"
    config_class = PCGradConfig
    summary = "forget ascent with PCGrad conflict removal against each task's retain gradient"
    search_space = {**SHARED, "retain_weight": Range(1e-3, 10.0, log=True)}

    def step(self, ctx):
        forget, retain = ctx.forget_batch(), ctx.retain_batch()
        forget_losses, kept_losses = ctx.forget_and_kept_losses(forget)
        retain_losses = ctx.retain_forward_losses(retain)
        params = dict(ctx.model.named_parameters())
        direction = gradients(-sum(forget_losses.values()), params, retain_graph=True)
        keeps = [gradients(loss, params, retain_graph=True)
                 for loss in [*retain_losses.values(), *kept_losses.values()]]
        shared = shared_names(ctx.model)
        order = torch.randperm(len(keeps), generator=ctx.generator).tolist()
        others = torch.stack([flatten({n: keeps[i][n] for n in shared}) for i in order])
        projected = pcgrad(flatten({n: direction[n] for n in shared}), others)
        direction.update(unflatten(projected, {n: direction[n] for n in shared}))
        weight = self.config.retain_weight
        set_grads(ctx.model, {n: direction[n] + weight * sum(keep[n] for keep in keeps)
                              for n in params})
        return forget_losses, retain_losses
