"""scrub: SCRUB teacher-student unlearning; the student moves away from the original on the forget
pairs and stays close to it on what must stay.

Kurmanji et al., "Towards Unbounded Machine Unlearning" (NeurIPS 2023). The teacher is the frozen
original model. Schedule (the paper's epochs made steps): each of the first `max_steps` steps makes
a max-step (ascent on the divergence on F), and every step then makes a min-step on

    alpha * (divergence on R + divergence on K) + gamma * (task loss on R + task loss on K).

Both updates use one optimiser, as in the reference code. The very first max-step has a zero
gradient (student = teacher); it bites once a min-step has moved the student.

Divergence per task kind, per valid pixel (or image) and then averaged per image and batch:
KL(teacher || student) of the softmaxes at temperature T, times T^2, for logit tasks
(segmentation, classification); the squared error averaged over channels for regression (depth,
normal). F = target tasks on the forget instances, K = kept tasks on them (partial mode), R = every
task on retain instances; kept-task heads are never in the max-step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from core.tasks import TaskSpec
from core.unlearning.base import UnlearnConfig, Unlearner, knob, register
from core.unlearning.search import SHARED, Range


def divergence(spec: TaskSpec, student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """Student-teacher divergence of each image over its valid pixels -> (B,).

    student, teacher: activated predictions (B, C, ...); target: the labels, only for the mask.
    """
    if spec.has_classes:
        log_s = (student.float() / temperature).log_softmax(1)
        log_t = (teacher.float() / temperature).log_softmax(1)
        values = (log_t.exp() * (log_t - log_s)).sum(1) * temperature ** 2
    else:
        values = (student.float() - teacher.float()).pow(2).mean(1)
    valid = spec.valid_mask(target).reshape(len(values), -1)
    total = torch.where(valid, values.reshape(len(values), -1), 0.0).sum(1)
    return total / valid.sum(1).clamp(min=1)


def divergences(tasks: Mapping[str, TaskSpec], student: Mapping[str, torch.Tensor],
                teacher: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
                temperature: float = 1.0) -> dict[str, torch.Tensor]:
    """{task: mean divergence over the batch} for `tasks`."""
    return {name: divergence(spec, student[name], teacher[name], batch[name], temperature).mean()
            for name, spec in tasks.items()}


@dataclass
class ScrubConfig(UnlearnConfig):
    max_steps: int = knob(10, 0, 100_000, "steps that begin with a max-step on the forget pairs")
    alpha: float = knob(1.0, 0.0, 100.0, "weight of the divergence on retain and kept pairs")
    gamma: float = knob(1.0, 0.0, 100.0, "weight of the task loss on retain and kept pairs")
    temperature: float = knob(4.0, 0.1, 100.0, "softmax temperature of the KL for logit tasks")


@register
class Scrub(Unlearner):
    name = "scrub"
    config_class = ScrubConfig
    config: ScrubConfig
    summary = "teacher-student: diverge from the original on forget pairs, match it on the rest"
    search_space = {**SHARED, "alpha": Range(0.1, 10.0, log=True), "gamma": Range(0.1, 10.0, log=True),
                    "temperature": Range(1.0, 16.0, log=True)}

    def unlearn(self, ctx, report):
        optimizer = ctx.make_optimizer()
        for step in range(1, self.config.steps + 1):
            if step <= self.config.max_steps:
                optimizer.zero_grad(set_to_none=True)
                (-sum(self.forget_divergences(ctx).values())).backward()
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            forget_losses, retain_losses, loss = self.min_objective(ctx)
            loss.backward()
            optimizer.step()
            report(step, forget_losses, retain_losses)

    def forget_divergences(self, ctx) -> dict[str, torch.Tensor]:
        """{target task: divergence from the teacher on the forget pairs} (to be maximised)."""
        forget = ctx.forget_batch()
        with ctx.autocast():
            student = ctx.model(forget["image"])
            with torch.no_grad():
                teacher = ctx.original(forget["image"])
        return divergences(ctx.target_tasks, student, teacher, forget, self.config.temperature)

    def min_objective(self, ctx):
        """(forget losses for the report, retain losses, the min-step loss)."""
        retain = ctx.retain_batch()
        forget = ctx.forget_batch()
        with ctx.autocast():
            retain_out = ctx.model(retain["image"])
            forget_out = ctx.model(forget["image"])
            with torch.no_grad():
                retain_teacher = ctx.original(retain["image"])
                forget_teacher = ctx.original(forget["image"])
            retain_losses = ctx.retain_losses(retain_out, retain)
            kept_losses = ctx.kept_losses(forget_out, forget)
            forget_losses = ctx.forget_losses(forget_out, forget)
        temperature = self.config.temperature
        close = divergences(ctx.tasks, retain_out, retain_teacher, retain, temperature)
        kept_close = divergences(ctx.kept_tasks, forget_out, forget_teacher, forget, temperature)
        task_loss = sum(retain_losses.values()) + sum(kept_losses.values(), 0.0)
        divergence_loss = sum(close.values()) + sum(kept_close.values(), 0.0)
        loss = self.config.alpha * divergence_loss + self.config.gamma * task_loss
        return forget_losses, retain_losses, loss
