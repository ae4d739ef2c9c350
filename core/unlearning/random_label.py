"""random_label: relabel the forget pairs at random and train on them, plus descent on R and K.

Random labelling as in Graves et al., "Amnesiac Machine Learning" (AAAI 2021), and the RL baseline
of SalUn (Fan et al., ICLR 2024). Multi-task reading: each task's kind draws its random targets
(`TaskKind.random_target`); for the built-in kinds:
- kinds with classes (segmentation, parts, classification): every labelled pixel (image) gets a
  random *other* class, drawn afresh each step; ignored pixels (label < 0) stay ignored;
- the others (depth, normal, saliency, edges): an image takes the targets of a retain instance of
  the same step (instance i of the forget batch gets those of retain instance i mod retain
  batch), so the random targets keep the statistics of real ones.
Kept tasks keep their true labels on the forget instances and are descended like retain data;
their heads never see a random target.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from core.tasks import TaskSpec
from core.unlearning.base import StepUnlearner, UnlearnConfig, knob, register
from core.unlearning.search import SHARED, Range


def random_targets(batch: Mapping[str, torch.Tensor], tasks: Mapping[str, TaskSpec],
                   donors: Mapping[str, torch.Tensor],
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """A copy of `batch` with the targets of `tasks` replaced by random ones.

    Args:
        batch: {"image": (B, 3, H, W), task: (B, ...), ...}.
        tasks: the tasks to relabel.
        donors: a batch of other instances, {task: (D, ...)}; the kinds without classes use
            their targets (instance i takes donor i mod D).
        generator: CPU generator for the random classes.
    Returns:
        {key: tensor}, the other keys shared with `batch`.
    """
    out = dict(batch)
    for name, spec in tasks.items():
        out[name] = spec.random_target(batch[name], donors.get(name), generator)
    return out


@dataclass
class RandomLabelConfig(UnlearnConfig):
    retain_weight: float = knob(1.0, 0.0, 100.0, "weight of descent on retain and kept pairs")


@register
class RandomLabel(StepUnlearner):
    name = "random_label"
    config_class = RandomLabelConfig
    summary = "descent on forget pairs with random targets, plus on retain and kept pairs"
    search_space = {**SHARED, "retain_weight": Range(0.1, 10.0, log=True)}

    def step(self, ctx):
        retain = ctx.retain_batch()
        forget = ctx.forget_batch()
        relabelled = random_targets(forget, ctx.target_tasks, retain, ctx.generator)
        with ctx.autocast():
            retain_losses = ctx.retain_losses(ctx.model(retain["image"]), retain)
            forget_out = ctx.model(forget["image"])
            kept_losses = ctx.kept_losses(forget_out, forget)
            random_losses = ctx.forget_losses(forget_out, relabelled)
            forget_losses = ctx.forget_losses(forget_out, forget)
        keep = sum(retain_losses.values()) + sum(kept_losses.values(), 0.0)
        (sum(random_losses.values()) + self.config.retain_weight * keep).backward()
        return forget_losses, retain_losses
