"""`TaskSpec`: one task of a multi-task model, delegating everything kind-specific to its kind.

Shapes: B images, C channels, H x W pixels. Predictions given to losses and metrics are already
activated (`TaskSpec.activate` runs in the model's forward).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from core.tasks.base import MetricAccumulator, TaskKind, get_kind, sum_count

_EPS = 1e-12
_FIELDS = ("name", "kind", "channels", "class_names")
_REQUIRED = ("name", "kind", "channels")

TASK_NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9_-]{0,63}"
"""Accepted task names: they key model heads and name files, so no dots, slashes or spaces."""
MAX_CHANNELS = 2**16
"""A task has at most this many channels (classes), so a card or a dataset's meta.json cannot make
a model head of absurd size."""


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task model.

    name: key of the task in model outputs and metric tables, e.g. "segmentation"; 1 to 64
        letters, digits, "_" or "-" (TASK_NAME_PATTERN).
    kind: the name of a registered `TaskKind` (`core.tasks.list_kinds()`).
    channels: classes for kinds with classes (segmentation, parts, classification: >= 2), else
        the kind's fixed count (depth, saliency, edges: 1; normal: 3); at most MAX_CHANNELS.
    class_names: optional, kinds with classes only, one name per channel.

    Inputs of the built-in kinds (pred activated; target as stored):
      segmentation, parts  pred (B, C, H, W) logits, target (B, H, W) long, -1 = ignore
      depth                pred (B, 1, H, W),        target (B, 1, H, W), <= 0 = invalid
      normal               pred (B, 3, H, W) unit,   target (B, 3, H, W) unit, all-zero = invalid
      saliency, edges      pred (B, 1, H, W) logits, target (B, 1, H, W) in [0, 1], -1 = ignore
      classification       pred (B, C) logits,       target (B,) long, < 0 = ignore
    """

    name: str
    kind: str
    channels: int
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        rules = get_kind(self.kind)
        if not isinstance(self.name, str) or not re.fullmatch(TASK_NAME_PATTERN, self.name):
            raise ValueError(f"task name {str(self.name)[:80]!r} is not accepted; use 1 to 64 "
                             f"letters, digits, '_' or '-', not starting with '-' "
                             f"({TASK_NAME_PATTERN})")
        channels = self.channels
        has_classes = rules.has_classes
        if (
            isinstance(channels, bool)
            or not isinstance(channels, int)
            or channels < rules.channels
            or (not has_classes and channels != rules.channels)
        ):
            rule = f">= {rules.channels} (one per class)" if has_classes else f"== {rules.channels}"
            raise ValueError(
                f"task {self.name!r} of kind {self.kind!r} needs channels {rule}, "
                f"got channels={channels!r}"
            )
        if channels > MAX_CHANNELS:
            raise ValueError(f"task {self.name!r} claims {channels} channels; a task has at most "
                             f"{MAX_CHANNELS:,}")
        object.__setattr__(self, "class_names", tuple(self.class_names))
        if self.class_names and not has_classes:
            raise ValueError(
                f"task {self.name!r} of kind {self.kind!r} takes no class_names, "
                f"got {list(self.class_names)}"
            )
        if self.class_names and len(self.class_names) != channels:
            raise ValueError(
                f"task {self.name!r} has channels={channels} but {len(self.class_names)} "
                f"class_names {list(self.class_names)}; give one name per channel or none"
            )

    @property
    def task_kind(self) -> TaskKind:
        """The registered `TaskKind` that knows everything about this task's kind."""
        return get_kind(self.kind)

    @property
    def per_pixel(self) -> bool:
        """True for dense outputs (B, C, H, W), False for image-level outputs (B, C)."""
        return self.task_kind.per_pixel

    @property
    def has_classes(self) -> bool:
        """Whether the channels are classes (one logit per class)."""
        return self.task_kind.has_classes

    @property
    def loss_name(self) -> str:
        """Name of the loss, e.g. "cross_entropy", "masked_l1" or "cosine"."""
        return self.task_kind.loss_name

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names, in the order every metric table uses."""
        return self.task_kind.metrics

    @property
    def primary(self) -> str:
        """The headline metric: higher is better, in [0, 1]."""
        return self.task_kind.primary

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of `metric` (one of `self.metrics`) is better."""
        if metric not in self.metrics:
            raise ValueError(
                f"task {self.name!r} has no metric {metric!r}; its metrics are "
                f"{', '.join(self.metrics)}"
            )
        return metric not in self.task_kind.lower_is_better

    def activate(self, raw: Tensor) -> Tensor:
        """Output activation of the head (unit vectors over dim 1 for normals, else identity).

        raw: (B, C, ...) -> same shape.
        """
        return self.task_kind.activate(self, raw)

    def valid_mask(self, target: Tensor) -> Tensor:
        """Which pixels (or samples) carry a label: target -> (B, H, W) bool, or (B,) bool."""
        return self.task_kind.valid_mask(self, target)

    def per_sample_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Loss of each image, averaged over its valid pixels -> (B,).

        An image with no valid pixel gets 0 (still attached to the graph, never NaN).
        Differentiable and free of data-dependent control flow, so it runs under
        `torch.func.vmap` / `torch.func.grad`.
        """
        kind = self.task_kind
        total, count = sum_count(kind.pixel_loss(self, pred, target), kind.valid_mask(self, target))
        return total / count.clamp(min=1)

    def loss(self, pred: Tensor, target: Tensor, weight: Tensor | None = None) -> Tensor:
        """Weighted mean of `per_sample_loss` over the batch -> scalar.

        weight: (B,) float in [0, 1], default all ones; 0 drops an image from training.
        Computes sum(w * l) / max(sum(w), eps), so all-zero weights give 0, not NaN.
        """
        losses = self.per_sample_loss(pred, target)  # (B,)
        if weight is None:
            return losses.mean()
        weight = weight.to(losses.dtype)
        return (weight * losses).sum() / weight.sum().clamp(min=_EPS)

    @torch.no_grad()
    def per_image_metrics(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """The split metrics computed on each image alone, plus "loss" (`per_sample_loss`).

        Returns `{metric: (B,) float32}` in the order of `self.metrics`, then "loss"; NaN where
        an image has no valid pixel (its loss is 0). Per-image mIoU averages over the classes
        with a non-empty union in that image. No gradient.
        """
        out = self.task_kind.per_image_metrics(self, pred, target)
        out = {m: out[m].float() for m in self.metrics}
        out["loss"] = self.per_sample_loss(pred, target).float()
        return out

    def accumulator(self) -> MetricAccumulator:
        """A fresh `MetricAccumulator` for this task's split metrics."""
        return self.task_kind.accumulator(self)

    def load_target(self, array: np.ndarray, size: tuple[int, int]) -> Tensor:
        """One ``.npy`` file's content -> this task's target for an (H, W) image (no batch axis).

        Raises ValueError whose message reads after the file's path.
        """
        return self.task_kind.load(self, array, size)

    def resize_target(self, target: Tensor, size: tuple[int, int]) -> Tensor:
        """One target (no batch axis) resampled to (H, W) (nearest neighbour for the built-ins)."""
        return self.task_kind.resize(self, target, size)

    def render(self, values: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """One instance's target or activated prediction (no batch axis) -> (H, W, 3) uint8."""
        return self.task_kind.render(self, values, reference)

    def explanation_score(self, pred: Tensor, target_class: int | None = None) -> Tensor:
        """The number an attribution explains: (B, C, H, W) -> (B, H, W), or (B, C) -> (B,)."""
        return self.task_kind.explanation_score(self, pred, target_class)

    def random_target(self, target: Tensor, donor: Tensor,
                      generator: torch.Generator | None = None) -> Tensor:
        """Random targets of a batch for random-label unlearning: (B, ...) -> (B, ...); donor
        (D, ...) holds other instances' targets for kinds without classes."""
        return self.task_kind.random_target(self, target, donor, generator)

    def to_dict(self) -> dict:
        """JSON-able form; `TaskSpec.from_dict` reads it back."""
        return {
            "name": self.name,
            "kind": self.kind,
            "channels": self.channels,
            "class_names": list(self.class_names),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> TaskSpec:
        """Build and validate a spec from `to_dict` output."""
        missing = [key for key in _REQUIRED if key not in data]
        if missing:
            raise ValueError(
                f"task spec {dict(data)!r} is missing {', '.join(missing)}; "
                f"required keys are {', '.join(_REQUIRED)}"
            )
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ValueError(
                f"task spec has unknown keys {', '.join(unknown)}; "
                f"accepted keys are {', '.join(_FIELDS)}"
            )
        return cls(
            name=data["name"],
            kind=data["kind"],
            channels=data["channels"],
            class_names=tuple(data.get("class_names", ())),
        )


def delta_m(
    metrics: Mapping[str, Mapping[str, float]],
    reference: Mapping[str, Mapping[str, float]],
    tasks: Sequence[TaskSpec],
) -> float:
    """Delta_m%: mean relative improvement of `metrics` over `reference` (MTAN / LibMTL).

    metrics, reference: `{task_name: {metric: value}}`, covering every metric of `tasks`.
    For each metric k the improvement is (m_k - r_k) / r_k when higher is better and
    (r_k - m_k) / r_k when lower is better; improvements are averaged within each task, then
    across tasks, and multiplied by 100. Positive means better than the reference; the
    reference scores 0.
    """
    if not tasks:
        raise ValueError("delta_m needs at least one task")
    per_task = []
    for task in tasks:
        gains = []
        for metric in task.metrics:
            try:
                value, ref = metrics[task.name][metric], reference[task.name][metric]
            except KeyError as err:
                raise ValueError(
                    f"delta_m needs {task.name}/{metric} in both metrics and reference; "
                    f"missing {err}"
                ) from None
            if ref == 0:
                raise ValueError(
                    f"reference {task.name}/{metric} is 0, so the relative change is undefined"
                )
            change = (value - ref) / ref
            gains.append(change if task.higher_is_better(metric) else -change)
        per_task.append(sum(gains) / len(gains))
    return 100 * sum(per_task) / len(per_task)
