"""orthograd: OrthoGrad (Shamsian et al. 2025, arXiv 2503.02312). The forget ascent direction is
projected, parameter tensor by parameter tensor, orthogonal to the per-sample gradients of a retain
mini-batch (per-sample gradients by torch.func vmap, basis by QR), so to first order no retain
sample of the batch is affected. The retain descent term is off by default, as in the paper, which
avoids interference at the source instead of correcting it.

Every tensor the forget loss reaches is projected: the shared encoder and the target tasks' heads.
A tensor with no more entries than the batch has samples (a BatchNorm scale, a small bias) is
usually spanned entirely and so left unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.unlearning.base import StepUnlearner, UnlearnConfig, knob, register
from core.unlearning.gradients import gradients, per_sample_grads, set_grads
from core.unlearning.projections import orthogonalize
from core.unlearning.search import SHARED, Range
from core.unlearning.subspaces import reached_names, sample_loss


@dataclass
class OrthoGradConfig(UnlearnConfig):
    retain_weight: float = knob(0.0, 0.0, 100.0, "weight of an added retain descent term")


@register
class OrthoGrad(StepUnlearner):
    name = "orthograd"
    config_class = OrthoGradConfig
    summary = "forget ascent orthogonal to the per-sample gradients of a retain batch"
    search_space = {**SHARED, "retain_weight": Range(1e-3, 10.0, log=True)}

    def step(self, ctx):
        forget, retain = ctx.forget_batch(), ctx.retain_batch()
        forget_losses, kept_losses = ctx.forget_and_kept_losses(forget)
        params = dict(ctx.model.named_parameters())
        direction = gradients(-sum(forget_losses.values()), params, retain_graph=True)
        names = reached_names(ctx.model, ctx.target_tasks)
        samples = per_sample_grads(ctx.model, retain, sample_loss(ctx.tasks), names)
        for name in names:
            flat = orthogonalize(direction[name].reshape(-1),
                                 samples[name].reshape(samples[name].shape[0], -1))
            direction[name] = flat.view_as(direction[name])
        direction, retain_losses = ctx.add_retain_term(direction, retain, kept_losses,
                                                       self.config.retain_weight)
        set_grads(ctx.model, direction)
        return forget_losses, retain_losses
