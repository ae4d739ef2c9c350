"""Tasks are data: what each task predicts, how it is trained and how it is scored.

A task is a `TaskSpec` (name, kind, channels). Everything that depends on what a task predicts
(output activation, valid pixels, loss, metrics) is looked up by `kind` in one table, so callers
never branch on a task's name. Metrics follow the LibMTL / MTAN definitions exactly.

Shapes: B images, C channels, H x W pixels. Predictions given to losses and metrics are already
activated (`TaskSpec.activate` runs in the model's forward).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("segmentation", "depth", "normal", "classification")
_EPS = 1e-12


class UnknownTaskKind(ValueError):
    """A task kind that is not one of `KINDS`."""

    def __init__(self, kind: object) -> None:
        super().__init__(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind


# ---------------------------------------------------------------- per-pixel building blocks


def _sum_count(values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Sum and count of the valid entries of each sample.

    values: (B, ...) float; valid: (B, ...) bool, same shape. Returns two (B,) tensors. Masks by
    `where`, not by indexing, so shapes never depend on data (safe under torch.func.vmap).
    """
    b = values.shape[0]
    total = torch.where(valid, values, 0.0).reshape(b, -1).sum(1)
    return total, valid.reshape(b, -1).sum(1)


def _nll(logits: Tensor, target: Tensor) -> Tensor:
    """Negative log-likelihood of each label: (B, C, ...) logits, (B, ...) long -> (B, ...).

    Ignored labels (-1) are read as class 0; the caller masks them out.
    """
    picked = logits.log_softmax(1).gather(1, target.clamp(min=0).unsqueeze(1))
    return -picked.squeeze(1)


def _depth_l1(pred: Tensor, target: Tensor) -> Tensor:
    """|p - g|: (B, 1, H, W), (B, 1, H, W) -> (B, H, W)."""
    return (pred - target).abs()[:, 0]


def _cosine_loss(pred: Tensor, target: Tensor) -> Tensor:
    """1 - <p, g> of unit vectors: (B, 3, H, W), (B, 3, H, W) -> (B, H, W)."""
    return 1 - (pred * target).sum(1)


def _depth_values(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-pixel depth errors: (B, 1, H, W), (B, 1, H, W) -> {metric: (B, H, W)}.

    Invalid pixels (g <= 0) get finite filler values. A prediction p <= 0 is clamped to the
    smallest positive float, so it fails delta1 instead of dividing by zero.
    """
    p, g = pred[:, 0], target[:, 0]
    g = torch.where(g > 0, g, 1.0)
    p_pos = p.clamp(min=torch.finfo(p.dtype).tiny)
    err = (p - g).abs()
    ratio = torch.maximum(p_pos / g, g / p_pos)
    return {"abs_err": err, "rel_err": err / g, "delta1": (ratio < 1.25).to(p.dtype)}


def _normal_values(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-pixel angular errors in degrees: (B, 3, H, W), (B, 3, H, W) -> {metric: (B, H, W)}."""
    cos = (F.normalize(pred, dim=1, eps=_EPS) * target).sum(1).clamp(-1, 1)
    angle = torch.rad2deg(torch.acos(cos))
    return {
        "mean": angle,
        "median": angle,
        "a11": (angle < 11.25).to(angle.dtype),
        "a22": (angle < 22.5).to(angle.dtype),
        "a30": (angle < 30).to(angle.dtype),
    }


def _class_values(pred: Tensor, target: Tensor) -> dict[str, Tensor]:
    """Per-sample correctness: (B, C) logits, (B,) long -> {"accuracy": (B,)}."""
    return {"accuracy": (pred.argmax(1) == target).to(pred.dtype)}


def _confusion(logits: Tensor, target: Tensor, valid: Tensor) -> Tensor:
    """Confusion matrix of each image over its valid pixels; rows = truth, columns = prediction.

    logits: (B, C, H, W); target: (B, H, W) long; valid: (B, H, W) bool -> (B, C, C) long.
    """
    b, c = logits.shape[:2]
    bad = valid & ((target < 0) | (target >= c))
    if bool(bad.any()):
        raise ValueError(
            f"segmentation target holds label {int(target[bad][0])} but the task has "
            f"channels={c}; labels must lie in 0..{c - 1}, or be -1 to ignore a pixel"
        )
    image = torch.arange(b, device=target.device).view(b, 1, 1)
    cell = (image * c + target) * c + logits.argmax(1)
    cell = torch.where(valid, cell, b * c * c)  # one overflow bin collects the ignored pixels
    return torch.bincount(cell.flatten(), minlength=b * c * c + 1)[:-1].view(b, c, c)


def _confusion_scores(confusion: Tensor) -> tuple[Tensor, Tensor]:
    """mIoU and pixel accuracy of (..., C, C) confusion counts -> two (...) float64 tensors.

    IoU = diag / (row + col - diag); classes with an empty union are NaN and left out of the
    mean; NaN everywhere (no valid pixel) gives NaN.
    """
    confusion = confusion.double()
    diag = confusion.diagonal(dim1=-2, dim2=-1)
    iou = diag / (confusion.sum(-1) + confusion.sum(-2) - diag)
    return iou.nanmean(-1), diag.sum(-1) / confusion.sum((-2, -1))


# ---------------------------------------------------------------- metric accumulators


class MetricAccumulator(ABC):
    """Split-level metrics of one task, fed batch by batch.

    `update(pred, target)` takes one batch (activated prediction and target, any device, no
    gradient kept); `compute()` returns `{metric: value}` over every valid pixel seen, in the
    order of `spec.metrics`, NaN for every metric when no valid pixel was seen.
    """

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    @abstractmethod
    def update(self, pred: Tensor, target: Tensor) -> None: ...

    @abstractmethod
    def compute(self) -> dict[str, float]: ...


class _ConfusionAccumulator(MetricAccumulator):
    """Segmentation: one confusion matrix over the whole split."""

    def __init__(self, spec: TaskSpec) -> None:
        super().__init__(spec)
        self.confusion = torch.zeros(spec.channels, spec.channels, dtype=torch.long)  # (C, C)

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        self.confusion += _confusion(pred, target, self.spec.valid_mask(target)).sum(0).cpu()

    def compute(self) -> dict[str, float]:
        miou, pixel_acc = _confusion_scores(self.confusion)
        return {"miou": miou.item(), "pixel_acc": pixel_acc.item()}


class _PixelAccumulator(MetricAccumulator):
    """Means (pixel-weighted over the split) and exact medians of per-pixel values."""

    def __init__(self, spec: TaskSpec, pixel: _PixelMetrics) -> None:
        super().__init__(spec)
        self.pixel = pixel
        self.sums = {m: 0.0 for m in spec.metrics if m not in pixel.medians}
        self.kept: dict[str, list[Tensor]] = {m: [] for m in pixel.medians}  # CPU float32
        self.count = 0

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = self.spec.valid_mask(target)
        for metric, values in self.pixel.values(pred, target).items():
            if metric in self.kept:
                self.kept[metric].append(values[valid].float().cpu())
            else:
                self.sums[metric] += torch.where(valid, values.double(), 0.0).sum().item()
        self.count += int(valid.sum())

    def compute(self) -> dict[str, float]:
        if self.count == 0:
            return dict.fromkeys(self.spec.metrics, math.nan)
        return {
            m: float(np.median(torch.cat(self.kept[m]).numpy()))
            if m in self.kept
            else self.sums[m] / self.count
            for m in self.spec.metrics
        }


# ---------------------------------------------------------------- scoring rules per kind


class _ConfusionMetrics:
    """Segmentation scoring: mIoU and pixel accuracy from confusion matrices."""

    def per_image(self, spec: TaskSpec, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        miou, pixel_acc = _confusion_scores(_confusion(pred, target, spec.valid_mask(target)))
        return {"miou": miou, "pixel_acc": pixel_acc}

    def accumulator(self, spec: TaskSpec) -> MetricAccumulator:
        return _ConfusionAccumulator(spec)


@dataclass(frozen=True)
class _PixelMetrics:
    """Scoring by the mean (or, for `medians`, the median) of a per-pixel value.

    values: (pred, target) -> {metric: (B, ...) tensor shaped like the valid mask}.
    """

    values: Callable[[Tensor, Tensor], dict[str, Tensor]]
    medians: tuple[str, ...] = ()

    def per_image(self, spec: TaskSpec, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        valid = spec.valid_mask(target)
        b = valid.shape[0]
        out = {}
        for metric, values in self.values(pred, target).items():
            values = values.double()
            if metric in self.medians:
                kept = torch.where(valid, values, math.nan).reshape(b, -1)
                out[metric] = kept.nanquantile(0.5, dim=1)  # averages the middle two, as numpy
            else:
                total, count = _sum_count(values, valid)
                out[metric] = total / count  # 0 / 0 = NaN for an image with no valid pixel
        return out

    def accumulator(self, spec: TaskSpec) -> MetricAccumulator:
        return _PixelAccumulator(spec, self)


@dataclass(frozen=True)
class _Kind:
    """Everything that depends on a task's kind."""

    loss_name: str
    metrics: tuple[str, ...]
    primary: str
    lower_is_better: frozenset[str]
    min_channels: int
    max_channels: int | None  # None: one channel per class, any number of classes
    activate: Callable[[Tensor], Tensor]
    valid_mask: Callable[[Tensor], Tensor]
    pixel_loss: Callable[[Tensor, Tensor], Tensor]  # (pred, target) -> shaped like valid mask
    scoring: _ConfusionMetrics | _PixelMetrics


def _identity(raw: Tensor) -> Tensor:
    return raw


def _unit_vectors(raw: Tensor) -> Tensor:
    return F.normalize(raw, dim=1, eps=_EPS)


_RULES = {
    "segmentation": _Kind(
        loss_name="cross_entropy",
        metrics=("miou", "pixel_acc"),
        primary="miou",
        lower_is_better=frozenset(),
        min_channels=2,
        max_channels=None,
        activate=_identity,
        valid_mask=lambda target: target != -1,
        pixel_loss=_nll,
        scoring=_ConfusionMetrics(),
    ),
    "depth": _Kind(
        loss_name="masked_l1",
        metrics=("abs_err", "rel_err", "delta1"),
        primary="delta1",
        lower_is_better=frozenset({"abs_err", "rel_err"}),
        min_channels=1,
        max_channels=1,
        activate=_identity,
        valid_mask=lambda target: target[:, 0] > 0,
        pixel_loss=_depth_l1,
        scoring=_PixelMetrics(_depth_values),
    ),
    "normal": _Kind(
        loss_name="cosine",
        metrics=("mean", "median", "a11", "a22", "a30"),
        primary="a30",
        lower_is_better=frozenset({"mean", "median"}),
        min_channels=3,
        max_channels=3,
        activate=_unit_vectors,
        valid_mask=lambda target: (target != 0).any(1),
        pixel_loss=_cosine_loss,
        scoring=_PixelMetrics(_normal_values, medians=("median",)),
    ),
    "classification": _Kind(
        loss_name="cross_entropy",
        metrics=("accuracy",),
        primary="accuracy",
        lower_is_better=frozenset(),
        min_channels=2,
        max_channels=None,
        activate=_identity,
        valid_mask=lambda target: target >= 0,
        pixel_loss=_nll,
        scoring=_PixelMetrics(_class_values),
    ),
}

_FIELDS = ("name", "kind", "channels", "class_names")
_REQUIRED = ("name", "kind", "channels")


# ---------------------------------------------------------------- the task spec


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task model.

    name: key of the task in model outputs and metric tables, e.g. "segmentation".
    kind: one of `KINDS`.
    channels: classes for segmentation / classification (>= 2), 1 for depth, 3 for normal.
    class_names: optional, segmentation / classification only, one name per channel.

    Inputs by kind (pred activated; target as stored):
      segmentation   pred (B, C, H, W) logits, target (B, H, W) long, -1 = ignore
      depth          pred (B, 1, H, W),        target (B, 1, H, W), <= 0 = invalid
      normal         pred (B, 3, H, W) unit,   target (B, 3, H, W) unit, all-zero = invalid
      classification pred (B, C) logits,       target (B,) long, < 0 = ignore
    """

    name: str
    kind: str
    channels: int
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in _RULES:
            raise UnknownTaskKind(self.kind)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"task name must be a non-empty string, got {self.name!r}")
        rules = _RULES[self.kind]
        channels = self.channels
        has_classes = rules.max_channels is None
        if (
            isinstance(channels, bool)
            or not isinstance(channels, int)
            or channels < rules.min_channels
            or (not has_classes and channels > rules.max_channels)
        ):
            rule = (
                f">= {rules.min_channels} (one per class)"
                if has_classes
                else f"== {rules.min_channels}"
            )
            raise ValueError(
                f"task {self.name!r} of kind {self.kind!r} needs channels {rule}, "
                f"got channels={channels!r}"
            )
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
    def _rules(self) -> _Kind:
        return _RULES[self.kind]

    @property
    def loss_name(self) -> str:
        """Name of the loss: "cross_entropy", "masked_l1" or "cosine"."""
        return self._rules.loss_name

    @property
    def metrics(self) -> tuple[str, ...]:
        """Metric names, in the order every metric table uses."""
        return self._rules.metrics

    @property
    def primary(self) -> str:
        """The headline metric: higher is better, in [0, 1]."""
        return self._rules.primary

    def higher_is_better(self, metric: str) -> bool:
        """Whether a larger value of `metric` (one of `self.metrics`) is better."""
        if metric not in self.metrics:
            raise ValueError(
                f"task {self.name!r} has no metric {metric!r}; its metrics are "
                f"{', '.join(self.metrics)}"
            )
        return metric not in self._rules.lower_is_better

    def activate(self, raw: Tensor) -> Tensor:
        """Output activation of the head: unit vectors over dim 1 for normals, else identity.

        raw: (B, C, ...) -> same shape.
        """
        return self._rules.activate(raw)

    def valid_mask(self, target: Tensor) -> Tensor:
        """Which pixels (or samples) carry a label: target -> (B, H, W) bool, or (B,) bool."""
        return self._rules.valid_mask(target)

    def per_sample_loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """Loss of each image, averaged over its valid pixels -> (B,).

        An image with no valid pixel gets 0 (still attached to the graph, never NaN).
        Differentiable and free of data-dependent control flow, so it runs under
        `torch.func.vmap` / `torch.func.grad`.
        """
        total, count = _sum_count(self._rules.pixel_loss(pred, target), self.valid_mask(target))
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
        out = self._rules.scoring.per_image(self, pred, target)
        out = {m: out[m].float() for m in self.metrics}
        out["loss"] = self.per_sample_loss(pred, target).float()
        return out

    def accumulator(self) -> MetricAccumulator:
        """A fresh `MetricAccumulator` for this task's split metrics."""
        return self._rules.scoring.accumulator(self)

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
