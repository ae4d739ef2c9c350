"""Search spaces of the methods' knobs: what tuning may try, declared by each method beside its
config (`search_space`, a class attribute of the `Unlearner` subclass).

    >>> search_space = {"lr": LR, "steps": STEPS, "beta": Range(0.5, 0.99)}

Every method declares the shared knobs it uses (`LR`, `STEPS`: the same ranges for every method)
and its own knobs beyond them. A range lies inside the knob's allowed range (`knob(low, high)`);
`modes` restricts a knob to the request modes where it acts (e.g. a back-off used only in
partial-task unlearning), so no trial is spent on a knob that does nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from core.unlearning.base import ConfigError, method_class

MODES = ("full", "partial")


@dataclass(frozen=True)
class Range:
    """A numeric knob's search range, inclusive; sampled uniformly in log space when `log`."""

    low: float
    high: float
    log: bool = False
    integer: bool = False
    modes: tuple[str, ...] = MODES

    def __post_init__(self) -> None:
        if not self.low < self.high or (self.log and self.low <= 0):
            raise ConfigError(f"bad search range {self.low} to {self.high}"
                              + (" (a log range must be positive)" if self.log else ""))

    def position(self, value: float) -> float:
        """Where `value` sits in the range, 0 (low) to 1 (high), on the sampling scale."""
        scale = math.log if self.log else float
        return (scale(value) - scale(self.low)) / (scale(self.high) - scale(self.low))

    def widened(self, value: float, limits: tuple[float | None, float | None], edge: float = 0.05,
                factor: float = 0.5) -> Range | None:
        """The range grown on the side where `value` lies within `edge` of the range's width
        (sampling scale) from that end, by `factor` x that width, clipped to the knob's allowed
        `limits` (low, high; None = unbounded; a log range stays positive). None when `value`
        is not near an edge or the range cannot grow there."""
        forward = math.log if self.log else float
        backward = math.exp if self.log else float
        low, high = forward(self.low), forward(self.high)
        width, where = high - low, self.position(value)
        new_low, new_high = self.low, self.high
        if where <= edge:
            new_low = backward(low - factor * width)
            if limits[0] is not None:
                new_low = max(new_low, limits[0])
        elif where >= 1 - edge:
            new_high = backward(high + factor * width)
            if limits[1] is not None:
                new_high = min(new_high, limits[1])
        if self.log and new_low <= 0:
            new_low = self.low
        if self.integer:
            new_low, new_high = math.floor(new_low), math.ceil(new_high)
        if (new_low, new_high) == (self.low, self.high):
            return None
        return Range(new_low, new_high, self.log, self.integer, self.modes)

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "log": self.log, "integer": self.integer}


@dataclass(frozen=True)
class Choice:
    """A categorical knob's options."""

    options: tuple[Any, ...]
    modes: tuple[str, ...] = MODES

    def to_dict(self) -> dict[str, Any]:
        return {"choices": list(self.options)}


Dimension = Range | Choice

LR = Range(1e-5, 1e-2, log=True)
"""The learning rate range of every method that takes optimiser steps."""
STEPS = Range(5, 240, log=True, integer=True)
"""The steps range of every method that takes optimiser steps (protocol 5, benchmarks/DECISIONS.md
section 13: 5-60 capped the methods whose best runs took 87-156 steps)."""
SHARED = {"lr": LR, "steps": STEPS}


def search_space(method: str, mode: str) -> dict[str, Dimension]:
    """The knobs tuning searches for `method` in `mode` ("full" or "partial"), checked against
    the method's config: every knob exists, and every range lies inside its allowed range.

    Raises ConfigError naming the method when it declares no `search_space`, names a knob its
    config lacks, or declares a range outside a knob's limits or choices outside its choices."""
    cls = method_class(method)
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; accepted: {', '.join(MODES)}")
    declared: Mapping[str, Dimension] | None = getattr(cls, "search_space", None)
    if not declared:
        raise ConfigError(f"{method} declares no search_space, so it cannot be tuned; declare one on "
                          f"{cls.__name__} (core.unlearning.search: LR, STEPS, Range, Choice)")
    specs = {spec.name: spec for spec in fields(cls.config_class)}
    for name, dimension in declared.items():
        if name not in specs:
            raise ConfigError(f"{method}'s search_space names {name!r}, which its config "
                              f"{cls.config_class.__name__} lacks; fields: {', '.join(specs)}")
        low, high, choices = (specs[name].metadata.get(k) for k in ("low", "high", "choices"))
        if isinstance(dimension, Range) and ((low is not None and dimension.low < low)
                                             or (high is not None and dimension.high > high)):
            raise ConfigError(f"{method}: the search range of {name} ({dimension.low} to "
                              f"{dimension.high}) leaves its allowed range {low} to {high}")
        if isinstance(dimension, Choice) and choices and set(dimension.options) - set(choices):
            raise ConfigError(f"{method}: the search choices of {name} {list(dimension.options)} "
                              f"are not all accepted; accepted: {list(choices)}")
    return {name: dimension for name, dimension in declared.items() if mode in dimension.modes}


def limits(method: str, knob: str) -> tuple[float | None, float | None]:
    """The allowed (low, high) of one knob of `method`'s config."""
    spec = next(s for s in fields(method_class(method).config_class) if s.name == knob)
    return spec.metadata.get("low"), spec.metadata.get("high")


def describe(space: Mapping[str, Dimension]) -> dict[str, dict[str, Any]]:
    """A search space as plain JSON-ready dicts."""
    return {name: dimension.to_dict() for name, dimension in space.items()}


def without(space: Mapping[str, Dimension], names: Sequence[str]) -> dict[str, Dimension]:
    """`space` less the knobs `names` (for a variant that switches them off)."""
    return {name: dimension for name, dimension in space.items() if name not in names}
