"""The trivial predictor: one constant per task fitted on the training set (the floor to beat)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from core.tasks import TaskSpec


class ConstantModel(nn.Module):
    """Predicts the same output for every pixel of every image.

    segmentation / classification: the most frequent training class; depth: the median valid
    training depth; normal: the normalised mean valid training normal.
    """

    def __init__(self, tasks: Iterable[TaskSpec], constants: Mapping[str, torch.Tensor]):
        super().__init__()
        self.tasks = {task.name: task for task in tasks}
        for name in self.tasks:
            self.register_buffer(f"const_{name}", constants[name].float())

    @classmethod
    def fit(cls, dataset, batch_size: int = 128) -> ConstantModel:
        """Fit on a dataset with `.ids`, `.tasks` and `.batch(ids)` (an MTLDataset)."""
        counts: dict[str, torch.Tensor] = {}
        values: dict[str, list[torch.Tensor]] = {name: [] for name in dataset.tasks}
        for start in range(0, len(dataset.ids), batch_size):
            batch = dataset.batch(dataset.ids[start:start + batch_size])
            for name, task in dataset.tasks.items():
                target = batch[name]
                valid = task.valid_mask(target)
                if task.kind in ("segmentation", "classification"):
                    hist = torch.bincount(target[valid].long(), minlength=task.channels)
                    counts[name] = counts.get(name, 0) + hist[: task.channels]
                elif task.kind == "depth":
                    values[name].append(target[:, 0][valid])
                else:
                    values[name].append(target.permute(0, 2, 3, 1)[valid])
        constants = {}
        for name, task in dataset.tasks.items():
            if task.kind in ("segmentation", "classification"):
                logits = torch.full((task.channels,), -10.0)
                logits[int(counts[name].argmax())] = 10.0
                constants[name] = logits
            elif task.kind == "depth":
                constants[name] = torch.cat(values[name]).median().reshape(1)
            else:
                mean = torch.cat(values[name]).mean(dim=0)
                constants[name] = mean / mean.norm().clamp_min(1e-8)
        return cls(dataset.tasks.values(), constants)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) -> {task: (B, C, H, W)} or (B, C) for classification."""
        batch, _, height, width = x.shape
        out = {}
        for name, task in self.tasks.items():
            const = getattr(self, f"const_{name}")
            if task.kind == "classification":
                out[name] = const.expand(batch, -1)
            else:
                out[name] = const.view(1, -1, 1, 1).expand(batch, -1, height, width)
        return out
