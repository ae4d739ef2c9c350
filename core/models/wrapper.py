"""MultiTaskWrapper: the common layout (one shared encoder, one decoder per task, as in LibMTL
and MTAN code) as a `MultiTaskModel`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.tasks import TaskSpec


class MultiTaskWrapper(nn.Module):
    """Hard parameter sharing: `encoder` feeds every head; forward returns {task: prediction}.

    Args:
        encoder: images (B, 3, H, W) -> a tensor (B, C, h, w), a list / tuple of such maps, or a
            dict of them (torchvision's IntermediateLayerGetter). Its parameters are the shared
            ones.
        heads: {task name: decoder}; each decoder takes exactly what the encoder returned and
            gives the task's raw output, (B, C, h, w) for a per-pixel task (upsampled here to
            (H, W) when h, w differ, bilinear) or (B, C) for an image-level one. One head per
            task in `tasks`, no more.
        tasks: the task specs, in output order.
        explain_layer: dotted name of the module LayerGradCam explains (e.g. "encoder.layer4");
            default the encoder's `body` if it has one, else its last child with parameters.

    State dict keys are "encoder.*" and "heads.<task>.*".
    """

    def __init__(self, encoder: nn.Module, heads: Mapping[str, nn.Module], tasks: Sequence[TaskSpec],
                 explain_layer: str | None = None):
        super().__init__()
        if not tasks:
            raise ValueError("a multi-task model needs at least one task")
        names = [task.name for task in tasks]
        if sorted(heads) != sorted(names):
            raise ValueError(f"heads {sorted(heads)} do not match the tasks {names}: "
                             "give exactly one head per task")
        self.encoder = encoder
        self.heads = nn.ModuleDict({name: heads[name] for name in names})
        self.tasks: dict[str, TaskSpec] = {task.name: task for task in tasks}
        self.architecture: dict[str, Any] = {}
        if explain_layer is not None:
            self.get_submodule(explain_layer)  # an unknown name fails here, not in Explain
        self._explain_layer = explain_layer

    # -- the contract

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images (B, 3, H, W) -> {task: activated prediction}, (B, C, H, W) or (B, C)."""
        return self._decode(self.encoder(images), images.shape[-2:])

    def shared_parameters(self) -> Iterator[nn.Parameter]:
        return self.encoder.parameters()

    def task_parameters(self, task: str) -> Iterator[nn.Parameter]:
        if task not in self.heads:
            raise KeyError(f"unknown task {task!r}; this model has: {', '.join(self.heads)}")
        return self.heads[task].parameters()

    # -- optional capabilities

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's feature maps as a list [(B, C_i, h_i, w_i), ...]."""
        return self._as_list(self.encoder(images))

    def decode(self, features: Sequence[torch.Tensor], size) -> dict[str, torch.Tensor]:
        """`features()`'s maps -> forward's dict at output size (H, W), without re-running the
        encoder."""
        return self._decode(self._packed(list(features)), size)

    def explain_layer(self) -> nn.Module | None:
        if self._explain_layer is not None:
            return self.get_submodule(self._explain_layer)
        body = getattr(self.encoder, "body", None)
        if isinstance(body, nn.Module):
            return body
        children = [m for m in self.encoder.children() if any(True for _ in m.parameters())]
        return children[-1] if children else None

    # -- helpers

    def _decode(self, representation: Any, size) -> dict[str, torch.Tensor]:
        out = {}
        for name, task in self.tasks.items():
            raw = self.heads[name](representation)
            if task.per_pixel and tuple(raw.shape[-2:]) != tuple(size):
                raw = F.interpolate(raw, size=tuple(size), mode="bilinear", align_corners=False)
            out[name] = task.activate(raw)
        return out

    def _as_list(self, representation: Any) -> list[torch.Tensor]:
        if isinstance(representation, torch.Tensor):
            self._layout: Any = None
            return [representation]
        if isinstance(representation, Mapping):
            self._layout = list(representation)
            return list(representation.values())
        self._layout = type(representation)
        return list(representation)

    def _packed(self, features: list[torch.Tensor]) -> Any:
        layout = getattr(self, "_layout", list)
        if layout is None:
            return features[0]
        if isinstance(layout, list):
            return dict(zip(layout, features))
        return layout(features)
