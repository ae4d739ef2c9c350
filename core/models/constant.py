"""The trivial predictor: one constant per task fitted on the training set (the floor to beat)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from core.tasks import TaskSpec


class ConstantModel(nn.Module):
    """Predicts the same output for every pixel of every image.

    Each task's kind fits its constant (`TaskKind.constant`); for the built-in kinds: the most
    frequent training class (segmentation, parts, classification), the median valid training depth,
    the normalised mean valid training normal, the logit of the share of positive pixels (saliency,
    edges).
    """

    def __init__(self, tasks: Iterable[TaskSpec], constants: Mapping[str, torch.Tensor]):
        super().__init__()
        self.tasks = {task.name: task for task in tasks}
        for name in self.tasks:
            self.register_buffer(f"const_{name}", constants[name].float())

    @classmethod
    def fit(cls, dataset, batch_size: int = 128) -> ConstantModel:
        """Fit on a dataset with `.ids`, `.tasks` and `.batch(ids)` (an MTLDataset)."""
        statistics: dict[str, list[torch.Tensor]] = {name: [] for name in dataset.tasks}
        for start in range(0, len(dataset.ids), batch_size):
            batch = dataset.batch(dataset.ids[start:start + batch_size])
            for name, task in dataset.tasks.items():
                statistics[name].append(task.task_kind.constant_statistic(task, batch[name]))
        constants = {name: task.task_kind.constant(task, statistics[name])
                     for name, task in dataset.tasks.items()}
        return cls(dataset.tasks.values(), constants)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) -> {task: (B, C, H, W)}, or (B, C) for image-level tasks."""
        batch, _, height, width = x.shape
        out = {}
        for name, task in self.tasks.items():
            const = getattr(self, f"const_{name}")
            if task.per_pixel:
                out[name] = const.view(1, -1, 1, 1).expand(batch, -1, height, width)
            else:
                out[name] = const.expand(batch, -1)
        return out
