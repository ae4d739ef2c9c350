"""head_refit: the target tasks' heads re-trained on retain instances only, the trunk frozen.

A baseline for partial-task unlearning (in the spirit of the last-layer re-training baselines of
the unlearning literature, e.g. "fine-tune the last layer" in Golatkar et al., CVPR 2020): with
`reinit` the target heads start again from a fresh initialisation (`reset_parameters` of each of
their modules, with BatchNorm statistics re-estimated on the retain batches: those BatchNorm
layers alone run in train mode), otherwise they are fine-tuned from their weights. Each step
descends the target tasks' losses on a retain batch with respect to those heads' parameters only;
no other parameter gets a gradient (their `.grad` stays None, which both optimisers skip), so the
shared trunk and the kept tasks' heads are never changed, bit for bit. F is never seen.

In full mode every task is a target, so every head is re-fitted. Whatever the mode, the trunk's
memorisation of the forget instances is untouched, which no head can remove: this baseline
measures how much forgetting the heads alone can give.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from core.unlearning.base import StepUnlearner, UnlearnConfig, knob, register
from core.unlearning.gradients import gradients, set_grads
from core.unlearning.search import SHARED, Choice


@dataclass
class HeadRefitConfig(UnlearnConfig):
    reinit: bool = knob(False, help="re-initialise the target heads (else fine-tune them)",
                        choices=(False, True))


@register
class HeadRefit(StepUnlearner):
    name = "head_refit"
    config_class = HeadRefitConfig
    summary = "the target tasks' heads re-fitted on retain instances, the trunk frozen"
    search_space = {**SHARED, "reinit": Choice((False, True))}

    def prepare(self, ctx):
        targets = {id(p) for task in ctx.target_tasks for p in ctx.model.task_parameters(task)}
        self.heads = {n: p for n, p in ctx.model.named_parameters() if id(p) in targets}
        self.tracking = self._reinitialise(ctx) if self.config.reinit else []

    def _reinitialise(self, ctx) -> list[torch.nn.modules.batchnorm._BatchNorm]:
        """Fresh weights for every module all of whose own parameters are target-head ones;
        returns their BatchNorm layers, put in train mode to track the retain statistics."""
        heads = {id(p) for p in self.heads.values()}
        tracking = []
        for module in ctx.model.modules():
            own = list(module.parameters(recurse=False))
            if own and all(id(p) in heads for p in own) and hasattr(module, "reset_parameters"):
                module.reset_parameters()
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                    tracking.append(module.train())
        return tracking

    def step(self, ctx):
        retain_losses = ctx.retain_forward_losses(ctx.retain_batch())
        target = sum(retain_losses[task] for task in ctx.target_tasks)
        set_grads(ctx.model, gradients(target, self.heads))
        for module in self.tracking:  # the forget pass is for the report: no statistics from it
            module.eval()
        with torch.no_grad():
            forget_losses, _ = ctx.forget_and_kept_losses(ctx.forget_batch())
        for module in self.tracking:
            module.train()
        return forget_losses, retain_losses
