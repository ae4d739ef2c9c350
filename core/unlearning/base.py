"""The Unlearner interface, its config, progress reports, results and the method registry.

Every method lives in its own file, subclasses `Unlearner` (usually `StepUnlearner`), declares a
config dataclass of its knobs (defaults and ranges in field metadata, read by the CLI and the
dashboard), and registers itself with `@register`; a method of a user's own does the same in a
plugin module (`core.plugins`: `--plugin MODULE` or the `mtunlearn.methods` entry point). A method
never mutates the model it is given: `Unlearner.run` hands it a deep copy, with BatchNorm layers
in eval mode.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, ClassVar

import torch

from core import distributed
from core.data.splits import VAL_PARTS, HeldOutError, RestrictedSplit, split_val
from core.device import select_device
from core.plugins import METHODS, entry_point_errors, load_entry_points, plugin_of
from core.requests import ForgetRequest, preview
from core.tasks import TaskSpec
from core.training import multitask_loss
from core.unlearning.gradients import gradients


def knob(default: Any, low: float | None = None, high: float | None = None, help: str = "",
         choices: Sequence[Any] | None = None) -> Any:
    """A config field with its allowed range (inclusive) or choices and a one-line help."""
    return field(default=default, metadata={"low": low, "high": high, "help": help,
                                            "choices": tuple(choices) if choices else None})


class ConfigError(ValueError):
    """A config value outside its allowed range, or a field the method does not have."""


class DivergenceError(ValueError):
    """A run whose losses or weights became NaN or infinite; nothing of it is kept."""

    def __init__(self, method: Unlearner, step: int, what: str):
        config = method.config
        knobs = [f"lr (now {config.lr:g})"] if hasattr(config, "lr") else []
        knobs.append(f"steps (now {config.steps})")
        super().__init__(f"{method.name} diverged at step {step}: {what}. Nothing was saved and "
                         f"the input model is unchanged; lower {' or '.join(knobs)}")
        self.step = step


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _convert(name: str, value: Any, kind: type) -> Any:
    """A config value from the CLI or a form (often a string) as the field's type."""
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    if kind is bool:
        if str(value).strip().lower() not in _BOOLS:
            raise ConfigError(f"{name}={value!r} is not a boolean; accepted: true, false, 1, 0")
        return _BOOLS[str(value).strip().lower()]
    try:
        return kind(value)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{name}={value!r} is not a valid {kind.__name__}") from error


@dataclass
class UnlearnConfig:
    """Knobs shared by every method."""

    steps: int = knob(30, 1, 100_000, "optimisation steps")
    lr: float = knob(1e-3, 1e-7, 10.0, "learning rate")
    optimizer: str = knob("adam", help="optimiser", choices=("adam", "sgd"))
    retain_batch: int = knob(32, 1, 4096, "retain instances per step")
    forget_batch: int = knob(32, 1, 4096, "forget instances per step (all when fewer)")
    seed: int = knob(0, 0, 2**31 - 1, "random seed")
    device: str = knob("auto", help="compute device", choices=("auto", "cuda", "mps", "cpu"))

    def __post_init__(self) -> None:
        for spec in fields(self):
            value, meta = getattr(self, spec.name), spec.metadata
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"{spec.name}={value!r} is not accepted; choose one of "
                                  f"{', '.join(map(str, meta['choices']))}")
            low, high = meta.get("low"), meta.get("high")
            if low is not None and not (low <= value <= high):
                raise ConfigError(f"{spec.name}={value!r} is out of range; accepted: {low} to {high}")

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None = None) -> UnlearnConfig:
        """The defaults with `overrides` applied; unknown names and bad values are refused."""
        overrides = dict(overrides or {})
        names = {spec.name: spec for spec in fields(cls)}
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ConfigError(f"{cls.__name__} has no field {', '.join(unknown)}; "
                              f"fields: {', '.join(names)}")
        return cls(**{name: _convert(name, value, type(names[name].default))
                      for name, value in overrides.items()})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ProgressEvent:
    """One step's report: per-task forget and retain losses (the tasks each method computed)."""

    step: int
    total: int
    forget_losses: dict[str, float] = field(default_factory=dict)
    retain_losses: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, float]:
        """The event as one history entry: {"step", "forget/<task>", "retain/<task>"}."""
        return {"step": self.step, **{f"forget/{k}": v for k, v in self.forget_losses.items()},
                **{f"retain/{k}": v for k, v in self.retain_losses.items()}}


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class UnlearnResult:
    """What a run returns: the new model, the per-step history, time, config and extras."""

    method: str
    model: torch.nn.Module
    request: ForgetRequest
    config: dict[str, Any]
    history: list[dict[str, float]]
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class UnlearningData:
    """The data a method may use: the training set (F, K and R live there), the val split seen
    through its calibration ids only (unseen data a method may look at), the model's training
    ids, and the original training recipe (for the retrain oracle).

    `val` is always a `RestrictedSplit` over `calibration_ids` (or None): asking it for any other
    id raises `HeldOutError`. Given the full val split, the object also keeps the path that the
    reporting and tuning evaluations read the held-out parts through (`held_out`);
    `Unlearner.run` hands a method `for_method()`, a copy without that path, so no tuning or
    test instance is reachable from a method's data. The val parts are those of
    `core.data.split_val`: calibration ids must lie in its calibration part (not in tuning or
    test); `from_card` takes the whole calibration part.
    """

    train: Any
    val: Any
    calibration_ids: list[int]
    architecture: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    train_ids: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.train_ids:
            self.train_ids = list(getattr(self.train, "ids", ()))
        self._full_val = None
        if self.val is None or isinstance(self.val, RestrictedSplit):
            return
        parts = split_val(self.val.ids)
        barred = set(parts["tuning"]) | set(parts["test"])
        leaked = [i for i in self.calibration_ids if i in barred]
        if leaked:
            raise HeldOutError(f"calibration ids {preview(leaked)} are in the tuning or test part of "
                               f"the val split; accepted: ids of its calibration part, "
                               f"{preview(parts['calibration'])} (core.data.split_val)")
        self._full_val = self.val
        self.val = RestrictedSplit(self.val, self.calibration_ids, "calibration")

    def for_method(self) -> UnlearningData:
        """A copy that reaches the val split only through the calibration view: what a method
        receives (its `held_out` raises)."""
        return UnlearningData(self.train, self.val, list(self.calibration_ids), self.architecture,
                              self.training, self.train_ids)

    def held_out(self, part: str = "test") -> tuple[Any, list[int]]:
        """(the full val dataset, the ids of `part`) for the evaluation code: "test" for the
        report, "tuning" for tuning trials and default choices, "calibration" for the method's
        own calibration ids. Raises HeldOutError on a method's copy (`for_method`) or on data
        built without a val split, ValueError for an unknown part."""
        if part not in VAL_PARTS:
            raise ValueError(f"unknown part {part!r} of the val split; accepted: {', '.join(VAL_PARTS)}")
        if self._full_val is None:
            raise HeldOutError(f"this data reaches the val split only through its calibration ids "
                               f"(it is what an unlearning method receives, or it has no val split), "
                               f"so the {part} part cannot be read; evaluate with the data built from "
                               f"the full val split, e.g. UnlearningData.from_card")
        ids = self.calibration_ids if part == "calibration" else split_val(self._full_val.ids)[part]
        return self._full_val, list(ids)

    @classmethod
    def from_card(cls, card, cache_dir=None, data_root: str | None = None) -> UnlearningData:
        """Open the data of a checkpoint: the dataset folder `data_root` (.npy layout) when
        given, else the data its model card records under training.data. The model's training
        ids are the card's `train_ids`, or every id of the train split when the card lists none."""
        from core.data import DatasetError, split_val
        from core.data.sources import DataSource

        tasks = tuple(task["name"] for task in card.tasks)
        if data_root:
            source = DataSource.parse(str(data_root))
            source = DataSource(benchmark=source.benchmark, root=source.root, tasks=tasks)
        else:
            source = card.data_source()
            if source is None:
                raise DatasetError(
                    "the model card records no training data (training.data is missing): name "
                    "the dataset folder in the .npy layout (CLI: --data ROOT; dashboard: the "
                    "dataset folder field on the Model page)")
        train, val = source.open("train", cache_dir), source.open("val", cache_dir)
        for spec in card.task_specs():
            found = train.tasks.get(spec.name)
            if found is None:
                raise DatasetError(f"the model's task {spec.name!r} is not in the data in "
                                   f"{train.root}; its tasks are {', '.join(train.tasks)}")
            if (found.kind, found.channels) != (spec.kind, spec.channels):
                unit = "classes" if spec.has_classes else "channels"
                raise DatasetError(f"task {spec.name!r}: the model predicts {spec.channels} {unit} "
                                   f"({spec.kind}), the data in {train.root} has {found.channels} "
                                   f"({found.kind}); name the dataset the model was trained on")
        return cls(train=train, val=val,
                   calibration_ids=split_val(val.ids)["calibration"],
                   architecture=dict(card.architecture), training=dict(card.training),
                   train_ids=list(card.train_ids))


class UnlearningContext:
    """What a method works with during one run: the working model, the frozen original, the
    request, batches of forget / retain instances on the device, and the loss helpers.

    `original`: the frozen original, or a function that builds it: it is then built the first
    time a method reads `ctx.original` (a method that never does, ssd or grad_ascent, holds no
    second copy of the model)."""

    def __init__(self, model, original, request: ForgetRequest, data: UnlearningData, config):
        self.model, self.request, self.data = model, request, data
        self._original = original
        self.config = config
        self.device = select_device(config.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.tasks: dict[str, TaskSpec] = dict(data.train.tasks)
        self.target_tasks = {t: self.tasks[t] for t in request.tasks}
        self.kept_tasks = {t: self.tasks[t] for t in request.kept_tasks}

    @property
    def original(self) -> torch.nn.Module:
        if not isinstance(self._original, torch.nn.Module):
            self._original = self._original()
        return self._original

    def _sample(self, ids: Sequence[int], size: int) -> list[int]:
        if len(ids) <= size:
            return list(ids)
        picks = torch.randperm(len(ids), generator=self.generator)[:size].tolist()
        return [ids[i] for i in picks]

    def batch(self, dataset, ids: Sequence[int]) -> dict[str, torch.Tensor]:
        """The instances `ids` on the device. Under torchrun the images are marked as shared by
        the ranks (`core.distributed.mark`): the model computes only this rank's rows of them."""
        batch = {key: value.to(self.device) for key, value in dataset.batch(ids).items()}
        distributed.mark(batch["image"])
        return batch

    def forget_batch(self) -> dict[str, torch.Tensor]:
        """Forget instances (all of them, or a random `forget_batch` of them) with every label."""
        return self.batch(self.data.train, self._sample(self.request.instances,
                                                        self.config.forget_batch))

    def retain_batch(self, size: int | None = None) -> dict[str, torch.Tensor]:
        """A random sample of retain instances."""
        return self.batch(self.data.train, self._sample(self.request.retain_ids,
                                                        size or self.config.retain_batch))

    def calibration_batch(self, size: int | None = None) -> dict[str, torch.Tensor]:
        return self.batch(self.data.val, self._sample(self.data.calibration_ids,
                                                      size or len(self.data.calibration_ids)))

    def autocast(self):
        """bf16 autocast on CUDA; plain float32 elsewhere."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forget_losses(self, outputs, batch) -> dict[str, torch.Tensor]:
        """{target task: loss} on forget pairs."""
        return multitask_loss(outputs, batch, self.target_tasks)

    def kept_losses(self, outputs, batch) -> dict[str, torch.Tensor]:
        """{kept task: loss} on the forget instances' kept pairs (empty in full mode)."""
        return multitask_loss(outputs, batch, self.kept_tasks)

    def retain_losses(self, outputs, batch) -> dict[str, torch.Tensor]:
        """{task: loss} on retain pairs."""
        return multitask_loss(outputs, batch, self.tasks)

    def forget_and_kept_losses(self, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """One forward of the forget instances -> ({target task: loss}, {kept task: loss})."""
        with self.autocast():
            outputs = self.model(batch["image"])
            return self.forget_losses(outputs, batch), self.kept_losses(outputs, batch)

    def retain_forward_losses(self, batch) -> dict[str, torch.Tensor]:
        """One forward of retain instances -> {task: loss}."""
        with self.autocast():
            return self.retain_losses(self.model(batch["image"]), batch)

    def add_retain_term(self, direction: dict[str, torch.Tensor], retain, kept_losses,
                        weight: float) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """direction + weight * d(retain + kept losses)/d params, and the retain losses (computed
        without a graph when weight is 0, for the report only)."""
        with torch.set_grad_enabled(weight > 0):
            retain_losses = self.retain_forward_losses(retain)
        if weight > 0:
            params = dict(self.model.named_parameters())
            keep = gradients(sum(retain_losses.values()) + sum(kept_losses.values(), 0.0), params)
            direction = {n: direction[n] + weight * keep[n] for n in params}
        return direction, retain_losses

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def make_optimizer(self, params=None) -> torch.optim.Optimizer:
        params = self.parameters() if params is None else params
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.config.lr, momentum=0.9)
        return torch.optim.Adam(params, lr=self.config.lr)


def _floats(losses: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    return {name: float(value.detach() if isinstance(value, torch.Tensor) else value)
            for name, value in losses.items()}


class Unlearner(ABC):
    """Base class of every method. Subclasses set `name` and `config_class` and implement
    `unlearn(ctx, report)`, which changes `ctx.model` in place and returns extras."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type[UnlearnConfig]] = UnlearnConfig
    summary: ClassVar[str] = ""
    plugin: ClassVar[str | None] = None
    """The plugin module that registered the method (`register`); None for mtunlearn's own."""

    def __init__(self, config: UnlearnConfig | Mapping[str, Any] | None = None):
        if isinstance(config, UnlearnConfig):
            if not isinstance(config, self.config_class):
                raise ConfigError(f"{self.name} needs a {self.config_class.__name__}, "
                                  f"got {type(config).__name__}")
            self.config = config
        else:
            self.config = self.config_class.from_overrides(config)

    def run(self, model: torch.nn.Module, request: ForgetRequest, data: UnlearningData,
            progress: ProgressCallback | None = None) -> UnlearnResult:
        """Unlearn `request` from a copy of `model`; `model` itself is left untouched.

        Under torchrun the working copy and the original are `core.distributed.replicated`:
        each rank computes its share of every batch, and each parameter gradient is summed
        across the ranks as autograd forms it, before the method reads or projects it, so every
        method runs data-parallel without code of its own (docs/ARCHITECTURE.md section 17)."""
        missing = set(request.all_tasks) ^ set(data.train.tasks)
        if missing:
            raise ValueError(f"request tasks {list(request.all_tasks)} do not match the data's "
                             f"tasks {list(data.train.tasks)}")
        device = select_device(self.config.device)
        torch.manual_seed(self.config.seed)
        working = copy.deepcopy(model).to(device).eval()
        for parameter in working.parameters():
            parameter.requires_grad_(True)

        def frozen() -> torch.nn.Module:
            original = copy.deepcopy(model).to(device).eval()
            for parameter in original.parameters():
                parameter.requires_grad_(False)
            return original

        ctx = UnlearningContext(working, frozen, request, data.for_method(), self.config)
        history: list[dict[str, float]] = []

        def report(step: int, forget: Mapping[str, torch.Tensor],
                   retain: Mapping[str, torch.Tensor] | None = None) -> None:
            event = ProgressEvent(step, self.total_steps(), _floats(forget), _floats(retain or {}))
            self.check_finite(event, working)
            history.append(event.record())
            if progress is not None:
                progress(event)

        start = time.perf_counter()
        try:
            # under torchrun the original is built now, so that its forwards are shared too
            with distributed.replicated(working, *((ctx.original,) if distributed.active() else ())):
                extras = self.unlearn(ctx, report) or {}
        except torch.linalg.LinAlgError as error:  # a decomposition of blown-up gradients
            self.check_finite(ProgressEvent(len(history) + 1, self.total_steps()), working)
            raise DivergenceError(self, len(history) + 1, f"a decomposition failed ({error})") from error
        seconds = time.perf_counter() - start
        self.check_finite(ProgressEvent(len(history), self.total_steps()), working)
        working.eval()
        return UnlearnResult(self.name, working.cpu(), request, self.config.to_dict(), history,
                             seconds, extras)

    def total_steps(self) -> int:
        return self.config.steps

    def check_finite(self, event: ProgressEvent, model: torch.nn.Module) -> None:
        """Stop the run (DivergenceError) when a reported loss or a weight is NaN or infinite."""
        for kind, losses in (("forget", event.forget_losses), ("retain", event.retain_losses)):
            for task, value in losses.items():
                if not math.isfinite(value):
                    raise DivergenceError(self, event.step, f"the {kind} loss of task {task!r} is {value}")
        named = list(model.named_parameters())
        finite = torch.stack([torch.isfinite(p).all() for _, p in named])  # one sync, not one per tensor
        if not bool(finite.all()):
            name = named[int((~finite).nonzero()[0])][0]
            raise DivergenceError(self, event.step, f"weight {name} holds NaN or Inf")

    @abstractmethod
    def unlearn(self, ctx: UnlearningContext, report: Callable[..., None]) -> dict[str, Any] | None:
        """Change ctx.model in place; call report(step, forget_losses, retain_losses) each step."""


class StepUnlearner(Unlearner):
    """A method that is one gradient rule applied for `steps` steps with one optimiser.

    Subclasses implement `step(ctx)`: fill `.grad` of ctx.model's parameters (descent direction
    for the optimiser) and return (forget_losses, retain_losses) for the report.
    """

    def unlearn(self, ctx, report):
        self.prepare(ctx)
        optimizer = ctx.make_optimizer()
        for step in range(1, self.config.steps + 1):
            optimizer.zero_grad(set_to_none=True)
            forget, retain = self.step(ctx)
            optimizer.step()
            report(step, forget, retain)
        return self.extras(ctx)

    def prepare(self, ctx: UnlearningContext) -> None:
        """Once before the first step (e.g. compute masks or subspaces)."""

    def extras(self, ctx: UnlearningContext) -> dict[str, Any]:
        return {}

    @abstractmethod
    def step(self, ctx: UnlearningContext) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        ...


REGISTRY: dict[str, type[Unlearner]] = {}
"""{name: method class}: mtunlearn's own methods and those plugins registered (`register`); read it
through `list_unlearners` / `method_class`, which load the `mtunlearn.methods` entry points first."""


class MethodError(ValueError):
    """An unknown unlearning method, or a method class that cannot be registered."""


def _described(cls: type) -> str:
    """"mtunlearn (core.unlearning.ssd.SSD)" or "plugin my_methods (my_methods.FisherForget)"."""
    owner = f"plugin {cls.__module__}" if plugin_of(cls.__module__) else "mtunlearn"
    return f"{owner} ({cls.__module__}.{cls.__qualname__})"


def register(cls: type[Unlearner]) -> type[Unlearner]:
    """Class decorator (or a plain call, `register(MyMethod)`): make a method available by its
    `name`, recording the plugin module it comes from (`plugin`, None for mtunlearn's own).

    Raises MethodError when the class is not an `Unlearner` with a name and an `UnlearnConfig`
    dataclass, or when its name is taken (naming both classes): a plugin never replaces a
    built-in method or another plugin's."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    if not (isinstance(cls, type) and issubclass(cls, Unlearner)):
        raise MethodError(f"{where} is not an unlearning method: subclass core.unlearning.Unlearner "
                          "(or StepUnlearner) to register it")
    if not cls.name or not isinstance(cls.name, str):
        raise MethodError(f"{where} has no name: set the class attribute `name`, e.g. name = \"my_method\"")
    config = cls.config_class
    if not (isinstance(config, type) and issubclass(config, UnlearnConfig) and is_dataclass(config)):
        raise MethodError(f"{where}.config_class must be a dataclass subclassing "
                          f"core.unlearning.UnlearnConfig (fields made with knob()), got {config!r}")
    if cls.name in REGISTRY:
        raise MethodError(f"an unlearning method named {cls.name!r} is already registered by "
                          f"{_described(REGISTRY[cls.name])}; {where} cannot take its name: give it "
                          "another `name`")
    cls.plugin = plugin_of(cls.__module__)
    REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a registered method (for tests and plugin reloads)."""
    REGISTRY.pop(name, None)


def list_unlearners() -> list[str]:
    """The registered methods' names, sorted, the installed `mtunlearn.methods` entry points
    loaded first."""
    load_entry_points(METHODS)
    return sorted(REGISTRY)


def method_class(name: str) -> type[Unlearner]:
    """The method registered as `name`; MethodError lists the registered ones, says how a method
    of one's own is brought in, and names any entry point that failed to load."""
    load_entry_points(METHODS)
    if name not in REGISTRY:
        raise MethodError(f"unknown unlearning method {name!r}; accepted: {', '.join(sorted(REGISTRY))}. "
                          "A method of your own comes from its module: --plugin MODULE (dashboard: mtu "
                          f"app --plugin MODULE) or an installed package's {METHODS!r} entry point"
                          f"{entry_point_errors(METHODS)}")
    return REGISTRY[name]


def method_plugins(names: Sequence[str]) -> list[str]:
    """The plugin modules the methods `names` come from (none for mtunlearn's own), each once:
    what a job or a spawned worker imports before it runs them."""
    return list(dict.fromkeys(p for p in (method_class(n).plugin for n in names) if p))


def get_unlearner(name: str, config: UnlearnConfig | Mapping[str, Any] | None = None) -> Unlearner:
    return method_class(name)(config)
