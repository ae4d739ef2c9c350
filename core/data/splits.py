"""The three parts of the val split, and a view of a dataset that refuses every other id.

The val split is cut once (docs/ARCHITECTURE.md section 5.2), deterministically by instance id
(`split_calibration_test`), into calibration (20%) and test (80%, reporting only). The
calibration part is cut again, by position in its sorted ids, into two halves:

    calibration  positions 0, 2, 4, ... of the calibration part (10% of val): the unseen data an
                 unlearning method may look at (e.g. to set its forgetting target)
    tuning       positions 1, 3, 5, ... (10% of val): the held-out split that scores tuning
                 trials and every default choice, so a method's own target never scores it
    test         the other 80%: reporting only

An unlearning method receives the val split only as a `RestrictedSplit` over the calibration ids:
asking it for any other id (through `batch`, `index_of`, `subset` or `__getitem__`) raises
`HeldOutError` naming the id. The reporting and tuning paths read the full val split through
`UnlearningData.held_out`, which a method's copy of the data does not have.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from typing import Any

from core.data.npy import DatasetError, split_calibration_test

VAL_PARTS = ("calibration", "tuning", "test")
"""The parts of the val split, in the order of `split_val`."""


class HeldOutError(DatasetError):
    """An id outside the part of a split that the caller may read (a test or tuning instance
    asked for by an unlearning method), or a held-out part asked for where none is reachable."""


def split_val(ids: Iterable[int]) -> dict[str, list[int]]:
    """{"calibration", "tuning", "test": sorted ids}: the three disjoint parts of the val split.

    Depends only on the set of ids. calibration + tuning = `split_calibration_test(ids)[0]`,
    test = `split_calibration_test(ids)[1]`.
    """
    calibration, test = split_calibration_test(ids)
    return {"calibration": calibration[::2], "tuning": calibration[1::2], "test": test}


def _preview(ids: Sequence[int], limit: int = 8) -> str:
    shown = ", ".join(str(i) for i in ids[:limit])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")


class RestrictedSplit:
    """The instances `allowed` of `dataset`, and nothing else.

    Same interface as an `MTLDataset` for what unlearning uses (ids, tasks, batch, index_of,
    subset, len, items by position); the attributes image_size, root, split and meta are read
    from the dataset when it has them. Any id outside `allowed` raises `HeldOutError`.

    Args:
        dataset: an `MTLDataset` or anything with `ids`, `tasks` and `batch(ids)`.
        allowed: the ids that may be read (distinct, all in `dataset.ids`).
        part: what the allowed ids are, for messages (e.g. "calibration").
    """

    _PASSED_ON = ("image_size", "root", "split", "meta")

    def __init__(self, dataset: Any, allowed: Iterable[int], part: str = "calibration"):
        self._dataset, self.part = dataset, part
        self.ids = [operator.index(i) for i in allowed]
        if len(set(self.ids)) < len(self.ids):
            raise DatasetError(f"the {part} ids must be distinct; got repeats")
        known = set(dataset.ids)
        unknown = [i for i in self.ids if i not in known]
        if unknown:
            raise DatasetError(f"{part} ids {_preview(unknown)} are not in the dataset; its ids are "
                               f"{_preview(list(dataset.ids))}")
        self._positions = {instance_id: k for k, instance_id in enumerate(self.ids)}
        self.tasks = dataset.tasks

    def __getattr__(self, name: str) -> Any:
        if name in self._PASSED_ON:
            return getattr(self._dataset, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, instance_id: int) -> int:
        """Position of an allowed id in `ids`; HeldOutError for any other id."""
        try:
            return self._positions[operator.index(instance_id)]
        except (KeyError, TypeError):
            raise HeldOutError(
                f"instance {instance_id!r} of the val split is outside the {self.part} part that "
                f"unlearning may read (tuning and test instances are held out: they score tuning "
                f"and the report); the {self.part} ids are {_preview(self.ids)}") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        instance_id = self.ids[operator.index(index)]
        return self._dataset[self._dataset.index_of(instance_id)]

    def batch(self, instance_ids: Iterable[int]) -> dict[str, Any]:
        ids = list(instance_ids)
        for instance_id in ids:
            self.index_of(instance_id)
        return self._dataset.batch(ids)

    def subset(self, instance_ids: Iterable[int]) -> RestrictedSplit:
        ids = list(instance_ids)
        for instance_id in ids:
            self.index_of(instance_id)
        return RestrictedSplit(self._dataset, ids, self.part)
