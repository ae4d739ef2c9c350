"""gpm: the forget ascent direction projected off the retain data's activation subspace of each
layer (GPM, Saha et al. 2021, as used for unlearning by PGU, Hoang et al. 2024).

For every Conv2d (im2col patches) and Linear layer the forget loss reaches (shared encoder and
target heads), U is the energy-threshold SVD basis of the layer's inputs on a retain sample,
computed once; each step the weight update becomes dW - dW U U^T, so the layer's outputs on those
inputs do not move. Biases and BatchNorm affine parameters have no input side and stay free, as
in GPM. Bases are cut to a memory budget (a share of the model's parameter memory).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.unlearning.base import StepUnlearner, UnlearnConfig, knob, register
from core.unlearning.gradients import gradients, set_grads
from core.unlearning.search import SHARED, Range
from core.unlearning.subspaces import forget_layers, layer_subspaces


@dataclass
class GPMConfig(UnlearnConfig):
    eps: float = knob(0.97, 0.0, 1.0, "energy kept in each layer's input basis")
    retain_weight: float = knob(0.0, 0.0, 100.0, "weight of an added retain descent term")
    subspace_batch: int = knob(32, 1, 4096, "retain instances the bases are computed on")
    max_rows: int = knob(1024, 16, 1_000_000, "input rows (sample x position) per layer's SVD")
    basis_budget: float = knob(0.25, 0.0, 1.0, "memory of all bases / the model's parameter memory")


@register
class GPM(StepUnlearner):
    name = "gpm"
    config_class = GPMConfig
    summary = "forget ascent projected off each layer's retain activation subspace"
    search_space = {**SHARED, "retain_weight": Range(1e-3, 10.0, log=True),
                    "basis_budget": Range(0.02, 1.0, log=True)}

    def prepare(self, ctx):
        cfg = self.config
        layers = forget_layers(ctx.model, ctx.target_tasks)
        budget = cfg.basis_budget * sum(p.numel() for p in ctx.model.parameters())
        generator = torch.Generator().manual_seed(cfg.seed)
        self.subspaces = layer_subspaces(
            ctx.model, layers, {"retain": (ctx.retain_batch(cfg.subspace_batch), ctx.tasks)},
            cfg.eps, None, budget, cfg.max_rows, generator)

    def step(self, ctx):
        forget, retain = ctx.forget_batch(), ctx.retain_batch()
        forget_losses, kept_losses = ctx.forget_and_kept_losses(forget)
        params = dict(ctx.model.named_parameters())
        direction = gradients(self.forget_objective(ctx, forget_losses), params, retain_graph=True)
        for layer, subspace in self.subspaces.items():
            direction[f"{layer}.weight"] = subspace.project(direction[f"{layer}.weight"])
        direction, retain_losses = ctx.add_retain_term(direction, retain, kept_losses,
                                                       self.config.retain_weight)
        set_grads(ctx.model, direction)
        return forget_losses, retain_losses

    def forget_objective(self, ctx, forget_losses):
        """The forget term the optimiser descends: -sum_t L_F,t (ascent)."""
        return -sum(forget_losses.values())

    def extras(self, ctx):
        return {"subspace_ranks": {name: s.ranks for name, s in self.subspaces.items()},
                "subspace_bytes": sum(s.nbytes for s in self.subspaces.values())}
