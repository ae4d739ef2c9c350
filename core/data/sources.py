"""Where a model's data comes from: a synthetic benchmark (generated and cached) or a folder.

A DataSource is recorded in every model card so the dashboard and the benchmark can reopen the
exact data a checkpoint was trained on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.data.npy import DatasetError, MTLDataset
from core.data.synthetic import BENCHMARKS, MAX_IMAGES, SIZE_RANGE, get_benchmark


@dataclass(frozen=True)
class DataSource:
    """A synthetic benchmark by name (with its generator settings) or a dataset root folder."""

    benchmark: str
    root: str | None = None
    seed: int = 0
    n_train: int = 800
    n_val: int = 600
    size: tuple[int, int] = (64, 64)
    tasks: tuple[str, ...] | None = field(default=None)

    LIMITS = {"n_train": (1, MAX_IMAGES), "n_val": (2, MAX_IMAGES), "size": SIZE_RANGE}

    def __post_init__(self) -> None:
        """Generator settings are bounded, so a card cannot ask for 10^7 images."""
        if self.root is not None:
            return
        for name in ("n_train", "n_val", "seed"):
            value = getattr(self, name)
            low, high = self.LIMITS.get(name, (0, 2**31 - 1))
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise DatasetError(f"data source {name}={value!r} is not accepted; give an integer "
                                   f"from {low} to {high}")
        low, high = self.LIMITS["size"]
        if (len(self.size) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in self.size)
                or not all(low <= v <= high for v in self.size)):
            raise DatasetError(f"data source size={list(self.size)!r} is not accepted; give "
                               f"[height, width] with each from {low} to {high}")

    @classmethod
    def parse(cls, name_or_path: str, **generator: Any) -> DataSource:
        """A synthetic benchmark's name (one of BENCHMARKS), or the path of a folder in the .npy
        layout."""
        if name_or_path in BENCHMARKS:
            return cls(benchmark=name_or_path, **generator)
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise DatasetError(f"{name_or_path!r} is neither a synthetic benchmark "
                               f"({', '.join(BENCHMARKS)}) nor a dataset folder")
        return cls(benchmark=path.name, root=str(path.resolve()))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSource:
        data = dict(data)
        data["size"] = tuple(data.get("size", (64, 64)))
        if data.get("tasks") is not None:
            data["tasks"] = tuple(data["tasks"])
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["size"] = list(self.size)
        data["tasks"] = None if self.tasks is None else list(self.tasks)
        return data

    def resolve(self, cache_dir: str | Path | None = None) -> Path:
        """The dataset root, generating the synthetic benchmark into the cache if needed."""
        if self.root is not None:
            return Path(self.root)
        return get_benchmark(self.benchmark, cache_dir=cache_dir, seed=self.seed,
                             n_train=self.n_train, n_val=self.n_val, size=(self.size[0], self.size[1]))

    def open(self, split: str, cache_dir: str | Path | None = None) -> MTLDataset:
        return MTLDataset(self.resolve(cache_dir), split, tasks=self.tasks)
