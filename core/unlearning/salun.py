"""salun: SalUn, random labelling restricted to the weights most salient for the forget pairs.

Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image
Classification and Generation" (ICLR 2024). Once, before the first step, the gradient of the
forget loss (target tasks' losses on every forget instance, read in `forget_batch` chunks) is taken
at the original weights; the `top_k` percent of all weights with the largest |gradient| (one global
ranking, as in the paper) form a fixed mask. Each step is then `random_label`'s, with every
gradient outside the mask zeroed, so those weights never move (neither optimiser has momentum or
weight decay on a gradient that was always zero). Kept-task heads have zero forget gradient, so
they only enter the mask when `top_k` exceeds the share of weights the forget loss reaches.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch

from core.unlearning.base import UnlearningContext, knob, register
from core.unlearning.gradients import Grads, gradients
from core.unlearning.random_label import RandomLabel, RandomLabelConfig
from core.unlearning.search import Range


def forget_gradient(ctx: UnlearningContext) -> Grads:
    """Gradient of the mean target-task loss over every forget instance, at ctx.model's weights."""
    params = dict(ctx.model.named_parameters())
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    ids = list(ctx.request.instances)
    for start in range(0, len(ids), ctx.config.forget_batch):
        chunk = ids[start:start + ctx.config.forget_batch]
        forget = ctx.batch(ctx.data.train, chunk)
        with ctx.autocast():
            loss = cast(torch.Tensor, sum(ctx.forget_losses(ctx.model(forget["image"]), forget).values()))
        for name, grad in gradients(loss * len(chunk) / len(ids), params).items():
            total[name] += grad
    return total


def saliency_mask(grads: Mapping[str, torch.Tensor], top_k: float) -> dict[str, torch.Tensor]:
    """The `top_k` percent of all entries with the largest |grad|, ranked globally.

    grads: {name: tensor}. Returns {name: bool tensor of the same shape}; exactly
    round(top_k / 100 * total entries) are True (ties broken arbitrarily).
    """
    scores = torch.cat([g.detach().abs().flatten().float() for g in grads.values()])
    keep = round(top_k / 100 * scores.numel())
    flat = torch.zeros_like(scores, dtype=torch.bool)
    flat[scores.topk(keep).indices] = True
    masks, offset = {}, 0
    for name, g in grads.items():
        masks[name] = flat[offset:offset + g.numel()].view(g.shape)
        offset += g.numel()
    return masks


@dataclass
class SalUnConfig(RandomLabelConfig):
    top_k: float = knob(50.0, 0.1, 100.0, "percent of weights updated: those with the largest "
                                          "|forget-loss gradient|")


@register
class SalUn(RandomLabel):
    name = "salun"
    config_class = SalUnConfig
    summary = "random_label on the top-k% weights by forget-loss gradient magnitude"
    search_space = {**RandomLabel.search_space, "top_k": Range(5.0, 100.0, log=True)}

    def prepare(self, ctx):
        self.mask = saliency_mask(forget_gradient(ctx), self.config.top_k)

    def step(self, ctx):
        losses = super().step(ctx)
        for name, parameter in ctx.model.named_parameters():
            if parameter.grad is not None:
                parameter.grad.mul_(self.mask[name])
        return losses

    def extras(self, ctx):
        return {"mask_share": sum(int(m.sum()) for m in self.mask.values())
                / sum(m.numel() for m in self.mask.values())}
