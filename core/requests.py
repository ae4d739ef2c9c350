"""Forget requests: which (instance, task) pairs to remove, which to keep.

A request names training instances and tasks. Asking for every task is full-task unlearning:
the instances are forgotten on every task. Asking for a proper subset is partial-task unlearning:
the same images keep their labels on the other tasks.

    forget pairs F = instances x tasks                (supervision to remove)
    kept pairs   K = instances x (other tasks)        (partial mode only)
    retain pairs R = (all other instances) x all tasks

Pairs are held as {task: frozenset of instance ids}, the same shape as the loss masks of
`core.training` (the retrain oracle masks exactly F).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

Pairs = dict[str, frozenset[int]]


class RequestError(ValueError):
    """A forget request that cannot be carried out; the message names the bad value."""


def preview(values: Iterable[Any], limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


@dataclass(frozen=True)
class ForgetRequest:
    """A validated request against one model's training set and tasks.

    Build it with `ForgetRequest.build`, which checks everything; the fields are then consistent.
    """

    instances: tuple[int, ...]
    tasks: tuple[str, ...]
    all_tasks: tuple[str, ...]
    retain_ids: tuple[int, ...] = field(repr=False)

    @classmethod
    def build(cls, instances: Iterable[int], tasks: Iterable[str] | None,
              train_ids: Sequence[int], all_tasks: Sequence[str]) -> ForgetRequest:
        """Validate a request.

        Args:
            instances: training instance ids to forget (non-empty, no duplicates).
            tasks: task names to forget them on; None or every task means full-task mode.
            train_ids: the model's training instance ids (its model card's `train_ids`).
            all_tasks: the model's task names, in model order.
        """
        try:
            instances = [int(i) for i in instances]
        except (TypeError, ValueError) as error:
            raise RequestError(f"instance ids must be integers: {error}") from error
        if not instances:
            raise RequestError("the request names no instance; pick at least one training instance")
        duplicates = sorted(i for i, n in Counter(instances).items() if n > 1)
        if duplicates:
            raise RequestError(f"duplicate instance ids {preview(duplicates)}; name each instance once")
        known = set(train_ids)
        unknown = [i for i in instances if i not in known]
        if unknown:
            raise RequestError(f"unknown instance ids {preview(unknown)}; the training set has "
                               f"{len(known)} instances with ids from {min(known)} to {max(known)}")
        tasks = list(all_tasks) if tasks is None else list(tasks)
        if not tasks:
            raise RequestError(f"the request names no task; accepted: {', '.join(all_tasks)}")
        accepted = set(all_tasks)
        bad = [t for t in tasks if t not in accepted]
        if bad:
            raise RequestError(f"unknown tasks {preview(bad)}; accepted: {', '.join(all_tasks)}")
        repeated = sorted(t for t, n in Counter(tasks).items() if n > 1)
        if repeated:
            raise RequestError(f"duplicate tasks {preview(repeated)}; name each task once")
        forgotten = set(instances)
        retain_ids = tuple(i for i in train_ids if i not in forgotten)
        if not retain_ids:
            raise RequestError(f"the request forgets all {len(known)} training instances; "
                               "at least one must be retained")
        chosen = set(tasks)
        ordered_tasks = tuple(t for t in all_tasks if t in chosen)
        return cls(tuple(sorted(forgotten)), ordered_tasks, tuple(all_tasks), retain_ids)

    @property
    def mode(self) -> str:
        """'full' when every task is forgotten, else 'partial'."""
        return "full" if set(self.tasks) == set(self.all_tasks) else "partial"

    @property
    def kept_tasks(self) -> tuple[str, ...]:
        """Tasks on which the forgotten instances keep their labels (empty in full mode)."""
        return tuple(t for t in self.all_tasks if t not in self.tasks)

    @property
    def forget_pairs(self) -> Pairs:
        return {t: frozenset(self.instances) for t in self.tasks}

    @property
    def kept_pairs(self) -> Pairs:
        return {t: frozenset(self.instances) for t in self.kept_tasks}

    @property
    def retain_pairs(self) -> Pairs:
        return {t: frozenset(self.retain_ids) for t in self.all_tasks}

    def to_dict(self) -> dict[str, Any]:
        return {"instances": list(self.instances), "tasks": list(self.tasks), "mode": self.mode}


ID_FORMAT = "ids and ranges separated by commas, e.g. 3, 17, 40-45"
_ID_TOKEN = re.compile(r"(\d+)(?:\s*-\s*(\d+))?")


def parse_ids(text: str, known_ids: Sequence[int] | set[int] | frozenset[int]) -> list[int]:
    """Instance ids typed as "3, 17, 40-45" -> [3, 17, 40, 41, 42, 43, 44, 45] (sorted, unique).

    Blank text gives []. Raises RequestError naming the first bad token and the accepted form,
    a range that runs backwards, or the ids that are not in `known_ids` (a set is used as it is,
    so a caller parsing many tokens builds it once).
    """
    ids: set[int] = set()
    known = known_ids if isinstance(known_ids, (set, frozenset)) else set(known_ids)
    for token in (t.strip() for t in text.split(",")):
        if not token:
            continue
        match = _ID_TOKEN.fullmatch(token)
        if match is None:
            raise RequestError(f"{token!r} is not an id or a range; write {ID_FORMAT}")
        digits = max(len(group) for group in match.groups() if group)
        if digits > 18:  # no training id is this long, and int() refuses over 4300 digits
            raise RequestError(f"id {token[:12]}... has {digits} digits; the {len(known)} training "
                               f"instances have ids from {min(known)} to {max(known)}")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if high < low:
            raise RequestError(f"range {token!r} runs backwards; write the smaller id first, e.g. "
                               f"{high}-{low}")
        if high - low >= len(known):
            raise RequestError(f"range {token!r} spans more ids than the {len(known)} training "
                               f"instances; ids run from {min(known)} to {max(known)}")
        ids.update(range(low, high + 1))
    unknown = sorted(ids - known)
    if unknown:
        raise RequestError(f"ids {preview(unknown)} are not in the training set; its {len(known)} "
                           f"instances have ids from {min(known)} to {max(known)}")
    return sorted(ids)
