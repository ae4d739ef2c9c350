"""ssd: Selective Synaptic Dampening, a one-shot edit of the weights, no optimiser steps.

Foster et al., "Fast Machine Unlearning Without Retraining Through Selective Synaptic Dampening"
(AAAI 2024). Importance of a weight = diagonal empirical Fisher, the mean over samples of its
squared per-sample gradient (torch.func, so sets read in batches of different sizes compare
fairly; the reference code squares per-batch gradients instead):
- forget importance I_F: target tasks' losses on every forget instance;
- retain importance I_R: every task's loss on `steps` random retain batches, plus (partial mode)
  the kept tasks' losses on the forget instances, which are kept data. The paper uses the whole
  training set here; we use only what must stay, as the request defines it.
`memory_budget_mb` covers the whole run: the working model (ssd never reads the frozen
original, so the run holds no copy of it), the two importance maps and the running sum are
counted first (`gradients.held_bytes`), and the per-sample gradients get what remains, in
chunks of samples squared and summed as they come.
Every weight with I_F > alpha * I_R is multiplied by min(lambda * I_R / I_F, 1); the others
are left bitwise untouched. Kept-task heads have I_F = 0, so they are never dampened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch

from core.tasks import TaskSpec
from core.unlearning.base import UnlearnConfig, Unlearner, UnlearningContext, knob, register
from core.unlearning.gradients import (
    DEFAULT_MEMORY_BUDGET_MB,
    Grads,
    held_bytes,
    per_sample_grad_chunks,
    per_sample_room,
)
from core.unlearning.search import Range


def squared_grads(ctx: UnlearningContext, batch: Mapping[str, torch.Tensor],
                  tasks: Mapping[str, TaskSpec],
                  memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, held: int = 0) -> Grads:
    """Sum over the samples of `batch` of the squared per-sample gradient of the tasks' summed
    loss: {name: parameter.shape}. The per-sample gradients come in chunks of samples sized to
    what `memory_budget_mb` leaves beside the `held` bytes the run holds meanwhile
    (`gradients.per_sample_room`; the running sum counted there), and are squared and summed as
    they come, so they are never all held."""

    def sample_loss(outputs, sample):
        return sum(spec.per_sample_loss(outputs[name], sample[name]).sum()
                   for name, spec in tasks.items())

    room = per_sample_room(ctx.model, batch, None, memory_budget_mb, held, keep_result=False)
    total: Grads = {}
    with ctx.autocast():
        for _, part in per_sample_grad_chunks(ctx.model, batch, sample_loss,
                                              memory_budget_mb=room):
            grads = cast(Grads, part)  # no aux: the chunk's result is the gradients alone
            for name, g in grads.items():
                square = g.float().pow(2).sum(0)
                total[name] = total[name] + square if name in total else square
            del grads, part
    return total


def importances(ctx: UnlearningContext, retain_batches: int,
                memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB) -> tuple[Grads, Grads]:
    """(forget importance, retain importance), each {name: parameter.shape}, within
    `memory_budget_mb` for the whole run (the model copies and these two maps counted first)."""
    forget = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in ctx.model.named_parameters()}
    retain = {n: torch.zeros_like(t) for n, t in forget.items()}
    held = held_bytes(ctx.model, forget, retain)
    ids, retain_count = list(ctx.request.instances), 0
    for start in range(0, len(ids), ctx.config.forget_batch):
        batch = ctx.batch(ctx.data.train, ids[start:start + ctx.config.forget_batch])
        for name, g2 in squared_grads(ctx, batch, ctx.target_tasks, memory_budget_mb, held).items():
            forget[name] += g2
        if ctx.kept_tasks:
            for name, g2 in squared_grads(ctx, batch, ctx.kept_tasks, memory_budget_mb, held).items():
                retain[name] += g2
            retain_count += len(batch["image"])
    for _ in range(retain_batches):
        batch = ctx.retain_batch()
        for name, g2 in squared_grads(ctx, batch, ctx.tasks, memory_budget_mb, held).items():
            retain[name] += g2
        retain_count += len(batch["image"])
    return ({n: t / len(ids) for n, t in forget.items()},
            {n: t / retain_count for n, t in retain.items()})


@torch.no_grad()
def dampen(params: Mapping[str, torch.Tensor], forget: Mapping[str, torch.Tensor],
           retain: Mapping[str, torch.Tensor], alpha: float, dampening: float
           ) -> dict[str, torch.Tensor]:
    """Multiply, in place, each entry with forget > alpha * retain by min(dampening * retain /
    forget, 1). All arguments are {name: tensor of one shape}; returns {name: bool selection}."""
    selected = {}
    for name, param in params.items():
        chosen = forget[name] > alpha * retain[name]
        scale = (dampening * retain[name] / forget[name].clamp(min=torch.finfo(torch.float32).tiny))
        param.copy_(torch.where(chosen, param * scale.clamp(max=1).to(param.dtype), param))
        selected[name] = chosen
    return selected


@dataclass
class SSDConfig(UnlearnConfig):
    steps: int = knob(10, 1, 100_000, "retain batches read to estimate the retain importance")
    alpha: float = knob(10.0, 0.0, 1e6, "selection: dampen weights with forget importance > "
                                        "alpha x retain importance")
    dampening: float = knob(1.0, 0.0, 1e6, "lambda: selected weights are scaled by "
                                           "min(lambda x retain / forget importance, 1)")
    memory_budget_mb: float = knob(DEFAULT_MEMORY_BUDGET_MB, 64.0, 1e7, "MB the whole run may "
                                   "take beyond the model it is given: the model copies and the "
                                   "importance maps are counted first, the per-sample gradients "
                                   "get the rest, in chunks of samples squared and summed chunk "
                                   "by chunk; too small a budget is refused, naming the least "
                                   "that works")


@register
class SSD(Unlearner):
    name = "ssd"
    config_class = SSDConfig
    summary = "dampen weights far more important to the forget pairs than to the rest"
    search_space = {"steps": Range(2, 20, log=True, integer=True), "alpha": Range(0.3, 100.0, log=True),
                    "dampening": Range(0.1, 10.0, log=True)}

    def total_steps(self) -> int:
        return 1

    def unlearn(self, ctx, report):
        forget_imp, retain_imp = importances(ctx, self.config.steps, self.config.memory_budget_mb)
        selected = dampen(dict(ctx.model.named_parameters()), forget_imp, retain_imp,
                          self.config.alpha, self.config.dampening)
        with torch.no_grad(), ctx.autocast():
            forget, retain = ctx.forget_batch(), ctx.retain_batch()
            report(1, ctx.forget_losses(ctx.model(forget["image"]), forget),
                   ctx.retain_losses(ctx.model(retain["image"]), retain))
        count = sum(int(s.sum()) for s in selected.values())
        return {"dampened": count,
                "dampened_share": count / sum(s.numel() for s in selected.values())}
