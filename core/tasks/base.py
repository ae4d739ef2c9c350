"""Task kinds: everything that depends on what a task predicts, one registered object per kind.

A kind (segmentation, depth, ...) is a `TaskKind` subclass in its own file, registered by name with
`register_kind`, in the manner of torchvision's `register_model`: a duplicate name is refused and
`list_kinds()` names them all. A kind knows its output activation, valid pixels, loss, metrics,
head shape (`per_pixel`, `channels`), how its ``.npy`` files are read and where they live, how its
truth and predictions are drawn, what number an explanation explains, the constant predictor and
the random target of random-label unlearning. `TaskSpec` (one task of a model) delegates to it, so
no caller ever branches on a kind's or a task's name.

Shapes: B images, C channels, H x W pixels. Every method gets the `TaskSpec` first (for its name,
channels and class names). Predictions given to losses and metrics are already activated
(`activate` runs in the model's forward).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from core.tasks.spec import TaskSpec

_KINDS: dict[str, TaskKind] = {}


class UnknownTaskKind(ValueError):
    """A task kind that no `TaskKind` is registered for."""

    def __init__(self, kind: object) -> None:
        super().__init__(f"unknown task kind {kind!r}; expected one of {', '.join(_KINDS)}")
        self.kind = kind


class DuplicateTaskKind(ValueError):
    """A second kind registered under a name that is taken."""


# ---------------------------------------------------------------- per-pixel building blocks


def sum_count(values: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """Sum and count of the valid entries of each sample.

    values: (B, ...) float; valid: (B, ...) bool, same shape. Returns two (B,) tensors. Masks by
    `where`, not by indexing, so shapes never depend on data (safe under torch.func.vmap).
    """
    b = values.shape[0]
    total = torch.where(valid, values, 0.0).reshape(b, -1).sum(1)
    return total, valid.reshape(b, -1).sum(1)


def nll(logits: Tensor, target: Tensor) -> Tensor:
    """Negative log-likelihood of each label: (B, C, ...) logits, (B, ...) long -> (B, ...).

    Ignored labels (-1) are read as class 0; the caller masks them out.
    """
    picked = logits.log_softmax(1).gather(1, target.clamp(min=0).unsqueeze(1))
    return -picked.squeeze(1)


def ratio(numerator: Tensor, denominator: Tensor, empty: float) -> Tensor:
    """numerator / denominator, `empty` where the denominator is 0 (no NaN, no warning)."""
    safe = torch.where(denominator > 0, denominator, torch.ones_like(denominator))
    return torch.where(denominator > 0, numerator / safe, empty)


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


class PixelMeanAccumulator(MetricAccumulator):
    """Means (pixel-weighted over the split) and exact medians of per-pixel values."""

    def __init__(self, spec: TaskSpec, kind: PixelMeanKind) -> None:
        super().__init__(spec)
        self.kind = kind
        self.sums = {m: 0.0 for m in spec.metrics if m not in kind.medians}
        self.kept: dict[str, list[Tensor]] = {m: [] for m in kind.medians}  # CPU float32
        self.count = 0

    @torch.no_grad()
    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = self.spec.valid_mask(target)
        for metric, values in self.kind.pixel_values(self.spec, pred, target).items():
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


# ---------------------------------------------------------------- the kind interface


@dataclass(frozen=True)
class FoundTask:
    """A task found among a split's folders (datasets without meta.json).

    channels None: the folder alone does not tell the channels, so meta.json must.
    """

    name: str
    folder: str
    channels: int | None
    class_names: tuple[str, ...] = ()


class TaskKind(ABC):
    """Everything that depends on what a task predicts. Subclass, fill in, `@register_kind`.

    Class attributes:
        name: the kind's name, as written in `TaskSpec.kind` and meta.json.
        loss_name: name of the loss, for cards and tables.
        metrics: metric names, in the order every metric table uses.
        primary: the headline metric: higher is better, in [0, 1].
        lower_is_better: the metrics where smaller is better.
        per_pixel: True for dense outputs (B, C, H, W), False for image-level outputs (B, C);
            model code picks a head by this.
        has_classes: True when the channels are classes (one logit each; class names allowed).
        channels: the channel count, or the least number of classes when `has_classes`.
        folder: the task's folder in the ``.npy`` layout, and its task name when found there
            without meta.json.
        folder_hint: how `folder` is described in error messages.
    """

    name: ClassVar[str]
    loss_name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    primary: ClassVar[str]
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    per_pixel: ClassVar[bool] = True
    has_classes: ClassVar[bool] = False
    channels: ClassVar[int]
    folder: ClassVar[str]

    @property
    def folder_hint(self) -> str:
        return self.folder

    # --- training

    def activate(self, spec: TaskSpec, raw: Tensor) -> Tensor:
        """Output activation of the head: raw (B, C, ...) -> same shape. Default: identity."""
        return raw

    @abstractmethod
    def valid_mask(self, spec: TaskSpec, target: Tensor) -> Tensor:
        """Which pixels (or images) carry a label: target -> (B, H, W) bool, or (B,) bool."""

    @abstractmethod
    def pixel_loss(self, spec: TaskSpec, pred: Tensor, target: Tensor) -> Tensor:
        """Loss of every pixel (or image), shaped like `valid_mask`; values at invalid pixels
        are dropped (keep them finite). No data-dependent control flow (torch.func.vmap)."""

    # --- scoring

    @abstractmethod
    def per_image_metrics(self, spec: TaskSpec, pred: Tensor, target: Tensor
                          ) -> dict[str, Tensor]:
        """The split metrics on each image alone: {metric: (B,)}, NaN without a valid pixel."""

    @abstractmethod
    def accumulator(self, spec: TaskSpec) -> MetricAccumulator:
        """A fresh `MetricAccumulator` for the split metrics."""

    # --- data

    @abstractmethod
    def load(self, spec: TaskSpec, array: np.ndarray, size: tuple[int, int]) -> Tensor:
        """One ``.npy`` file's array -> the target of one instance (no batch axis).

        size: (H, W) of the instance's image. Raises ValueError whose message reads after the
        file's path, e.g. "has shape (4, 5); expected (4, 5, 3)".
        """

    def resize(self, spec: TaskSpec, target: Tensor, size: tuple[int, int]) -> Tensor:
        """A target (no batch axis) resampled to (H, W): nearest neighbour, which keeps labels
        and invalid markers exact. Image-level targets are returned as they are."""
        if not self.per_pixel or tuple(target.shape[-2:]) == tuple(size):
            return target
        lead = target.shape[:-2]
        flat = target.reshape(1, -1, *target.shape[-2:])
        out = F.interpolate(flat.double(), size=tuple(size), mode="nearest-exact")
        return out.to(target.dtype).reshape(*lead, *size)

    def discover(self, folders: Sequence[str]) -> list[FoundTask]:
        """Tasks of this kind among a split's folder names, for datasets without meta.json.

        Default: `folder`, named after the kind, with the fixed channel count (or, for a kind
        with classes, unknown channels: meta.json must give them).
        """
        if self.folder not in folders:
            return []
        return [FoundTask(self.name, self.folder, None if self.has_classes else self.channels)]

    # --- pictures and explanations

    @abstractmethod
    def render(self, spec: TaskSpec, values: np.ndarray, reference: np.ndarray | None
               ) -> np.ndarray:
        """One instance's target or activated prediction (no batch axis) -> (H, W, 3) uint8.

        reference: the truth when drawing a prediction (to share its scale), else None.
        """

    @abstractmethod
    def explanation_score(self, spec: TaskSpec, pred: Tensor, target_class: int | None
                          ) -> Tensor:
        """The number an attribution explains, before averaging over a region.

        pred: (B, C, H, W) or (B, C) activated; returns (B, H, W) for per-pixel kinds, (B,)
        otherwise. Raises ValueError for a class the task lacks, or a class given to a kind
        without classes.
        """

    # --- baselines and unlearning

    @abstractmethod
    def constant_statistic(self, spec: TaskSpec, target: Tensor) -> Tensor:
        """What the constant predictor needs from one batch of targets (summed or gathered by
        `constant`)."""

    @abstractmethod
    def constant(self, spec: TaskSpec, statistics: Sequence[Tensor]) -> Tensor:
        """The best constant prediction (C,) from every batch's `constant_statistic`; a model
        outputs it at every pixel (or for every image) as its activated prediction."""

    def random_target(self, spec: TaskSpec, target: Tensor, donor: Tensor,
                      generator: torch.Generator | None) -> Tensor:
        """Random targets for a batch (random-label unlearning).

        target: (B, ...); donor: (D, ...) targets of other instances. Default: instance i takes
        donor i mod D (the targets of another instance, for kinds without classes).
        """
        return donor[torch.arange(len(target), device=donor.device) % len(donor)]


class PixelMeanKind(TaskKind):
    """A kind scored by the mean (or, for `medians`, the median) of a per-pixel value."""

    medians: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def pixel_values(self, spec: TaskSpec, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        """{metric: (B, ...) value of every pixel}, shaped like the valid mask."""

    def per_image_metrics(self, spec, pred, target):
        valid = self.valid_mask(spec, target)
        b = valid.shape[0]
        out = {}
        for metric, values in self.pixel_values(spec, pred, target).items():
            values = values.double()
            if metric in self.medians:
                kept = torch.where(valid, values, math.nan).reshape(b, -1)
                out[metric] = kept.nanquantile(0.5, dim=1)  # averages the middle two, as numpy
            else:
                total, count = sum_count(values, valid)
                out[metric] = total / count  # 0 / 0 = NaN for an image with no valid pixel
        return out

    def accumulator(self, spec):
        return PixelMeanAccumulator(spec, self)


# ---------------------------------------------------------------- helpers for loaders


def per_pixel_array(array: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    """Check an (H, W[, C]) array against the image size; returns it as (C, H, W)."""
    shape = array.shape
    if array.ndim == 2 and channels == 1:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[:2] != tuple(size) or array.shape[2] != channels:
        expected = f"({size[0]}, {size[1]}" + (")" if channels == 1 else f", {channels})")
        raise ValueError(f"has shape {shape} but its image is {size[0]}x{size[1]}; expected "
                         f"{expected}" + (f" or ({size[0]}, {size[1]}, 1)" if channels == 1 else ""))
    return array.transpose(2, 0, 1)


def check_classes(values: np.ndarray, spec: TaskSpec) -> None:
    """Class ids must lie in 0..channels-1, or be -1 (ignore)."""
    low, high = int(values.min()), int(values.max())
    if low < -1 or high >= spec.channels:
        raise ValueError(f"holds class ids {low}..{high}; task {spec.name!r} expects "
                         f"0..{spec.channels - 1}, or -1 to ignore")


def class_channel(spec: TaskSpec, pred: Tensor, target_class: int | None) -> Tensor:
    """(B, C, ...) logits -> (B, ...) logit of `target_class`."""
    if target_class is None or not 0 <= target_class < spec.channels:
        names = f" ({', '.join(spec.class_names)})" if spec.class_names else ""
        raise ValueError(f"class {target_class!r} is not a class of task {spec.name!r}; "
                         f"pick an index in 0..{spec.channels - 1}{names}")
    return pred[:, target_class]


def no_class(spec: TaskSpec, target_class: int | None) -> None:
    """Refuse a class for a kind without classes."""
    if target_class is not None:
        raise ValueError(f"task {spec.name!r} ({spec.kind}) has no classes, got class "
                         f"{target_class!r}; pass target_class=None")


# ---------------------------------------------------------------- the registry

K = TypeVar("K", bound=type[TaskKind])


def register_kind(cls: K) -> K:
    """Class decorator: register one instance of a `TaskKind` subclass under `cls.name`.

    Raises:
        DuplicateTaskKind: the name is taken (kinds are never silently replaced).
        TypeError: not a TaskKind subclass, or a class attribute is missing or inconsistent.
    """
    if not (isinstance(cls, type) and issubclass(cls, TaskKind)):
        raise TypeError(f"register_kind takes a TaskKind subclass, got {cls!r}")
    missing = [a for a in ("name", "loss_name", "metrics", "primary", "channels", "folder")
               if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"task kind {cls.__name__} lacks the class attributes "
                        f"{', '.join(missing)}")
    name = cls.name
    if not isinstance(name, str) or not name:
        raise TypeError(f"task kind {cls.__name__} needs a non-empty string name, got {name!r}")
    if cls.primary not in cls.metrics or not set(cls.lower_is_better) <= set(cls.metrics):
        raise TypeError(f"task kind {name!r}: primary {cls.primary!r} and lower_is_better "
                        f"{sorted(cls.lower_is_better)} must be among its metrics "
                        f"{', '.join(cls.metrics)}")
    if cls.primary in cls.lower_is_better:
        raise TypeError(f"task kind {name!r}: its primary metric {cls.primary!r} must be "
                        "higher-is-better")
    if name in _KINDS:
        raise DuplicateTaskKind(f"task kind {name!r} is already registered (by "
                                f"{type(_KINDS[name]).__qualname__}); pick another name")
    _KINDS[name] = cls()
    return cls


def get_kind(name: str) -> TaskKind:
    """The registered kind called `name`; UnknownTaskKind (listing the kinds) otherwise."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise UnknownTaskKind(name) from None


def list_kinds() -> tuple[str, ...]:
    """The names of the registered kinds, in registration order."""
    return tuple(_KINDS)
