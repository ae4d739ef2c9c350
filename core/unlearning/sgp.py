"""sgp: the forget ascent direction with each retain input direction scaled down by its importance,
not removed (SGP, Saha & Roy, "Continual Learning with Scaled Gradient Projection", AAAI 2023).

GPM's bases, computed as `gpm` computes them (energy threshold `eps` on a retain sample's layer
inputs, cut to the memory budget), give each layer U (D, r). SGP scores basis direction i by its
singular value s_i, here the norm of the sample's input rows along u_i (exactly the singular value
when U is the rows' own SVD basis, which it is with one group), as

    lambda_i = (alpha + 1) s_i / (alpha s_i + s_max),   s_max = max_i s_i,

and each step the weight update becomes dW - dW U diag(lambda) U^T. lambda_i lies in (0, 1]: the
strongest direction is always removed entirely (lambda = 1), weaker ones only in part; alpha -> 0
gives s_i / s_max, alpha -> infinity gives 1 for every direction, which is GPM. Biases and
BatchNorm parameters stay free, as in `gpm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from core.unlearning.base import knob, register
from core.unlearning.gpm import GPM, GPMConfig
from core.unlearning.search import Range
from core.unlearning.subspaces import collect_signals, forget_layers, layer_subspaces


def sgp_importance(singular_values: Tensor, alpha: float) -> Tensor:
    """SGP's importance of each basis direction: (alpha + 1) s_i / (alpha s_i + s_max).

    singular_values: (r,) non-negative -> (r,) in [0, 1]; all zeros when every s_i is zero.
    """
    if singular_values.numel() == 0 or float(singular_values.max()) <= 0:
        return torch.zeros_like(singular_values)
    top = singular_values.max()
    return (alpha + 1) * singular_values / (alpha * singular_values + top)


def scaled_projection(update: Tensor, basis: Tensor, importance: Tensor) -> Tensor:
    """dW - dW U diag(lambda) U^T, on the input side of a weight update.

    update: (C_out, ...) whose trailing dimensions flatten to D (a Conv2d weight reads as its
        im2col shape); basis: U (D, r), orthonormal columns; importance: lambda (r,).
    Returns the update's shape. With lambda all ones this is GPM's dW - dW U U^T.
    """
    flat = update.reshape(update.shape[0], -1)
    coefficients = (flat @ basis.to(flat.dtype)) * importance.to(flat.dtype)
    return (flat - coefficients @ basis.T.to(flat.dtype)).view_as(update)


@dataclass
class ScaledSubspace:
    """A layer's retain input basis with SGP's importance of each direction."""

    inputs: Tensor  # U (D, r), orthonormal
    importance: Tensor  # lambda (r,)
    ranks: dict[str, Any]

    @property
    def nbytes(self) -> int:
        return self.inputs.numel() * self.inputs.element_size()

    def project(self, update: Tensor) -> Tensor:
        return scaled_projection(update, self.inputs, self.importance)


@dataclass
class SGPConfig(GPMConfig):
    alpha: float = knob(5.0, 0.0, 1e6, "SGP's scale: 0 scales a direction by s_i / s_max, "
                                       "large values remove every direction (GPM)")


@register
class SGP(GPM):
    name = "sgp"
    config_class = SGPConfig
    summary = "forget ascent with each retain input direction scaled by its singular-value importance"
    search_space = {**GPM.search_space, "alpha": Range(0.5, 100.0, log=True)}

    def prepare(self, ctx):
        cfg = self.config
        layers = forget_layers(ctx.model, ctx.target_tasks)
        budget = cfg.basis_budget * sum(p.numel() for p in ctx.model.parameters())
        batch = ctx.retain_batch(cfg.subspace_batch)
        bases = layer_subspaces(ctx.model, layers, {"retain": (batch, ctx.tasks)}, cfg.eps, None,
                                budget, cfg.max_rows, torch.Generator().manual_seed(cfg.seed))
        # the same rows again (same batch, same seeded draw) for the singular values along U
        rows = collect_signals(ctx.model, layers, batch, {}, cfg.max_rows,
                               torch.Generator().manual_seed(cfg.seed)).inputs
        self.subspaces = {}
        for name, subspace in bases.items():
            basis = subspace.inputs
            values = (rows[name].to(basis) @ basis).norm(dim=0)
            self.subspaces[name] = ScaledSubspace(basis, sgp_importance(values, cfg.alpha),
                                                  subspace.ranks)
