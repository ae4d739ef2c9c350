"""adam_nscl: the optimiser's update of the forget ascent confined to the approximate null space of
each layer's retain feature covariance (Adam-NSCL, Wang et al., "Training Networks in Null Space
of Feature Covariance for Continual Learning", CVPR 2021).

Once, for every Conv2d (im2col patches, groups 1) and Linear layer the forget loss reaches, the
uncentred covariance C = X^T X / n of the layer's inputs X on a retain sample (n rows, D columns)
is eigendecomposed; its approximate null space is spanned by the eigenvectors whose eigenvalue is
at most `null_ratio` x the smallest (the paper's a * lambda_min; the smallest is first floored at
NULL_FLOOR x the largest, so float noise on an exactly rank-deficient covariance does not set
the threshold). Each step the raw gradient (forget ascent, plus `retain_weight` x retain descent)
goes to the optimiser, whose moments see it unprojected as in the paper's Adam; the optimiser's
update of each such weight, dW, is then replaced by dW U_0 U_0^T, U_0 the null-space basis, so
the layer's outputs on the retain features change only by what lies in the small eigenvalues.
It is computed as dW - dW U_1 U_1^T with U_1 the complement (the retained directions), which is
what is stored. Biases and BatchNorm parameters stay free, as in `gpm`. The reference code's
Frobenius normalisation of U_0 U_0^T (a per-layer rescaling of the step) is left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from core.unlearning.base import StepUnlearner, UnlearnConfig, knob, register
from core.unlearning.gradients import gradients, set_grads
from core.unlearning.projections import project_task_aware
from core.unlearning.search import SHARED, Range
from core.unlearning.subspaces import collect_signals, forget_layers

NULL_FLOOR = 1e-6
"""Eigenvalues below this share of the largest count as zero when the threshold is set."""


def covariance_range(rows: Tensor, null_ratio: float) -> Tensor:
    """The complement of the approximate null space of the rows' uncentred covariance.

    rows: (n, D) features, one observation per row. The covariance C = rows^T rows / n is
    eigendecomposed in float64; eigenvectors with eigenvalue <= null_ratio x max(lambda_min,
    NULL_FLOOR x lambda_max) span the null space. Returns the others, U_1 (D, k) orthonormal,
    strongest first (k = 0 when every eigenvalue is in the null space, e.g. all-zero rows).
    """
    rows = rows.double()
    values, vectors = torch.linalg.eigh(rows.T @ rows / max(rows.shape[0], 1))
    values, vectors = values.flip(0), vectors.flip(1)
    threshold = null_ratio * max(float(values[-1]), NULL_FLOOR * float(values[0]))
    return vectors[:, values > threshold].float()


def null_space_update(update: Tensor, retained: Tensor) -> Tensor:
    """dW U_0 U_0^T = dW - dW U_1 U_1^T: a weight update (C_out, ...) confined on its input side
    (the trailing dimensions, D) to the orthogonal complement of U_1 (D, k)."""
    return project_task_aware(update, None, retained.to(update.dtype))


@dataclass
class AdamNSCLConfig(UnlearnConfig):
    null_ratio: float = knob(10.0, 1.0, 1e12, "null space: eigenvalues up to this multiple of the "
                                              "smallest")
    retain_weight: float = knob(0.0, 0.0, 100.0, "weight of an added retain descent term")
    subspace_batch: int = knob(32, 1, 4096, "retain instances the covariances are computed on")
    max_rows: int = knob(1024, 16, 1_000_000, "input rows (sample x position) per layer's covariance")


@register
class AdamNSCL(StepUnlearner):
    name = "adam_nscl"
    config_class = AdamNSCLConfig
    summary = "the optimiser's forget-ascent update confined to each layer's retain-feature null space"
    search_space = {**SHARED, "null_ratio": Range(2.0, 1e4, log=True),
                    "retain_weight": Range(1e-3, 10.0, log=True)}

    def unlearn(self, ctx, report):
        self.prepare(ctx)
        optimizer = ctx.make_optimizer()
        weights = {name: module.weight for name, module in self.layers.items()}
        for step in range(1, self.config.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            forget, retain = self.step(ctx)
            before = {name: weight.detach().clone() for name, weight in weights.items()}
            optimizer.step()
            with torch.no_grad():
                for name, weight in weights.items():
                    weight.copy_(before[name] + null_space_update(weight - before[name],
                                                                  self.retained[name]))
            report(step, forget, retain)
        return self.extras(ctx)

    def prepare(self, ctx):
        cfg = self.config
        self.layers = forget_layers(ctx.model, ctx.target_tasks)
        rows = collect_signals(ctx.model, self.layers, ctx.retain_batch(cfg.subspace_batch), {},
                               cfg.max_rows, torch.Generator().manual_seed(cfg.seed)).inputs
        self.retained = {name: covariance_range(rows[name], cfg.null_ratio).to(module.weight.device)
                         for name, module in self.layers.items()}

    def step(self, ctx):
        forget, retain = ctx.forget_batch(), ctx.retain_batch()
        forget_losses, kept_losses = ctx.forget_and_kept_losses(forget)
        params = dict(ctx.model.named_parameters())
        direction = gradients(-sum(forget_losses.values()), params, retain_graph=True)
        direction, retain_losses = ctx.add_retain_term(direction, retain, kept_losses,
                                                       self.config.retain_weight)
        set_grads(ctx.model, direction)
        return forget_losses, retain_losses

    def extras(self, ctx):
        return {"null_ranks": {name: module.weight[0].numel() - self.retained[name].shape[1]
                               for name, module in self.layers.items()}}
