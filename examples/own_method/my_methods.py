"""An unlearning method defined in the user's own file, registered as an mtunlearn plugin.

fisher_forget: Fisher-shaped noise, then repair. After the Fisher forgetting of Golatkar et al.,
"Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep Networks" (CVPR 2020), which
adds noise to the weights shaped by their Fisher information, read here for a multi-task request:

1. importance: the diagonal empirical Fisher of each weight on the forget pairs, I_F (the target
   tasks' losses on the forget instances), and on what must stay, I_R (every task's loss on
   `fisher_batches` retain batches and, in a partial-task request, the kept tasks' losses on the
   forget instances); mtunlearn's `core.unlearning.ssd.importances` computes both;
2. noise: every weight w of a tensor W gets Gaussian noise of standard deviation

       alpha * rms(W) * I_F / (I_F + I_R)

   so a weight that only the forget pairs need gets noise of up to alpha x its tensor's RMS and a
   weight that what stays needs gets almost none (a kept task's head has I_F = 0: none at all);
3. repair: `steps` optimiser steps of descent on the retain pairs and the kept pairs, which
   restore what the noise cost the data that stays.

Everything mtunlearn asks of a method is here: a `name`, a config dataclass of its knobs (each
with its default, range and help: the CLI's --set, the dashboard's form and tuning read them), a
`search_space` for `mtu bench` and `mtu tune`, and the rule itself (`StepUnlearner.step`: fill
`.grad` and return the losses to report; `prepare` runs once before the first step).

    mtu info --plugin my_methods --methods   # lists "fisher_forget" as a plugin's method
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.unlearning import StepUnlearner, UnlearnConfig, UnlearningContext, knob, register
from core.unlearning.search import SHARED, Range
from core.unlearning.ssd import importances


@dataclass
class FisherForgetConfig(UnlearnConfig):
    steps: int = knob(10, 1, 10_000, "repair steps after the noise: descent on retain and kept pairs")
    alpha: float = knob(0.5, 0.0, 10.0, "noise scale: a weight only the forget pairs need gets noise "
                                        "of up to alpha x the RMS of its tensor")
    fisher_batches: int = knob(2, 1, 64, "retain batches the retain importance is estimated on")


@register
class FisherForget(StepUnlearner):
    name = "fisher_forget"
    config_class = FisherForgetConfig
    summary = "Fisher-shaped noise on the weights the forget pairs need, then retain repair steps"
    search_space = {**SHARED, "alpha": Range(0.05, 2.0, log=True)}

    def prepare(self, ctx: UnlearningContext) -> None:
        forget, retain = importances(ctx, self.config.fisher_batches)
        tiny = torch.finfo(torch.float32).tiny
        with torch.no_grad():
            for name, weight in ctx.model.named_parameters():
                share = forget[name] / (forget[name] + retain[name]).clamp(min=tiny)
                rms = weight.float().pow(2).mean().sqrt()
                noise = torch.randn(weight.shape, generator=ctx.generator).to(weight.device)
                weight.add_((self.config.alpha * rms * share * noise).to(weight.dtype))

    def step(self, ctx: UnlearningContext):
        retain_losses = ctx.retain_forward_losses(ctx.retain_batch())
        forget_losses, kept_losses = ctx.forget_and_kept_losses(ctx.forget_batch())
        (sum(retain_losses.values()) + sum(kept_losses.values(), 0.0)).backward()
        return forget_losses, retain_losses
