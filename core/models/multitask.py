"""MultiTaskNet: one shared encoder, one head per task; forward returns {task: prediction}."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.models.backbones import BACKBONES, conv_bn_relu
from core.tasks import TaskSpec

DEFAULT_ARCHITECTURE: dict[str, Any] = {"backbone": "small_cnn", "width": 16}


class DenseHead(nn.Module):
    """Decoder for a per-pixel task: the coarse features upsampled and fused with the fine ones.

    Input: encoder features [(B, Cf, h, w), (B, Cc, h', w')]; output (B, out_channels, H, W).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, width: int):
        super().__init__()
        fine, coarse = in_channels
        self.reduce = conv_bn_relu(coarse, width)
        self.fuse = conv_bn_relu(width + fine, width)
        self.predict = nn.Conv2d(width, out_channels, 1)

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        fine, coarse = features
        x = F.interpolate(self.reduce(coarse), size=fine.shape[-2:], mode="bilinear",
                          align_corners=False)
        x = self.fuse(torch.cat([x, fine], dim=1))
        return F.interpolate(self.predict(x), size=size, mode="bilinear", align_corners=False)


class ClassificationHead(nn.Module):
    """Image-level head: global average pool of the coarse features, then a linear layer -> (B, C)."""

    def __init__(self, in_channels: Sequence[int], out_channels: int, width: int):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_channels[-1], width), nn.ReLU(inplace=True),
                                nn.Linear(width, out_channels))

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        return self.fc(features[-1].mean(dim=(2, 3)))


class MultiTaskNet(nn.Module):
    """Shared encoder + one head per task (hard parameter sharing).

    Args:
        tasks: the task specs, in the order the heads are built.
        architecture: {"backbone": "small_cnn" | "resnet18", "width": int, ...}.
    """

    def __init__(self, tasks: Sequence[TaskSpec], architecture: Mapping[str, Any] | None = None):
        super().__init__()
        if not tasks:
            raise ValueError("a MultiTaskNet needs at least one task")
        arch = {**DEFAULT_ARCHITECTURE, **(architecture or {})}
        name = arch["backbone"]
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; accepted: {', '.join(BACKBONES)}")
        width = int(arch["width"])
        self.architecture = arch
        self.tasks = {task.name: task for task in tasks}
        self.encoder = BACKBONES[name](width=width) if name == "small_cnn" else BACKBONES[name]()
        head_width = width
        self.heads = nn.ModuleDict({
            task.name: (ClassificationHead if task.kind == "classification" else DenseHead)(
                self.encoder.out_channels, task.channels, head_width)
            for task in tasks
        })

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) -> {task: activated prediction}."""
        return self.decode(self.encoder(x), x.shape[-2:])

    def decode(self, features: list[torch.Tensor], size) -> dict[str, torch.Tensor]:
        """The encoder's feature maps -> {task: activated prediction} at `size` (H, W), for
        callers that want the features too without running the encoder twice."""
        return {name: task.activate(self.heads[name](features, size))
                for name, task in self.tasks.items()}

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        if task not in self.heads:
            raise KeyError(f"unknown task {task!r}; this model has: {', '.join(self.heads)}")
        return self.heads[task].parameters()
