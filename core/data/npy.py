"""Multi-task datasets in the MTAN / LibMTL preprocessed .npy layout.

``ROOT/{train,val}/image/{i}.npy`` holds the images (H, W, 3) and one sibling folder per task holds
the targets with the same file names:

Each task kind (`core.tasks`) reads and checks its own files and knows its default folder:

===================  ==================  =====================================================
folder               task (kind)         file content
===================  ==================  =====================================================
``label``            segmentation        (H, W) class ids, -1 = ignore (13 NYUv2 classes)
``label_N``          segmentation        (H, W) class ids in 0..N-1, -1 = ignore (Cityscapes)
``human_parts``      parts               (H, W) part ids, -1 = ignore (classes from meta.json)
``saliency``         saliency            (H, W) in [0, 1] or uint8 0..255, -1 = ignore
``edge``             edges               (H, W) in [0, 1] or uint8 0..255, -1 = ignore
``depth``            depth               (H, W, 1) or (H, W), 0 = invalid (NYUv2: metres;
                                         Cityscapes: inverse depth)
``normal``           normal              (H, W, 3) unit vectors, all-zero = invalid
``class``            classification      a scalar class id (classes from meta.json)
===================  ==================  =====================================================

An optional ``ROOT/meta.json`` (written by `core.data.synthetic`) names the benchmark and, under
"tasks", each task's folder, kind, channels and class names; when present it defines the tasks.
Files are read with ``allow_pickle=False``: a pickled file is refused, never unpickled. A dataset
whose images differ in size (PASCAL-Context) is read with `MTLDataset(..., size=(H, W))`: images
are resized bilinearly, targets by their kind's rule (nearest neighbour for the built-ins).
"""

from __future__ import annotations

import json
import operator
import os
import re
import stat
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from core.tasks import TaskSpec, get_kind, list_kinds
from core.tasks.segmentation import CITYSCAPES_CLASSES, NYUV2_CLASSES

CACHE_LIMIT_BYTES = 200 * 2**20
"""Datasets whose decoded size (first item x count) is below this are kept in memory once read."""

__all__ = ["CITYSCAPES_CLASSES", "NYUV2_CLASSES", "DatasetError", "MTLDataset", "MTLSubset",
           "split_calibration_test"]

_PREVIEW = 5


class DatasetError(ValueError):
    """A dataset on disk that does not follow the layout; the message names the path and what
    was expected."""


# --- reading and converting one file -----------------------------------------------------------

MAX_ELEMENTS = 2**28
"""A .npy file whose header claims more elements than this is refused before it is read."""


MAX_META_BYTES = 32 * 2**20
"""A meta.json larger than this is refused before it is parsed."""

_NOT_REGULAR = "is not a regular file (a folder, FIFO, device or broken link)"


def _open_regular(path: Path, expected: str):
    """`path` opened for binary reading, or DatasetError when it is not a regular file. The open
    does not block (a FIFO's reader would wait for a writer forever); the file type is checked on
    the open descriptor, so a file swapped in between cannot slip through."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as err:
        raise DatasetError(f"cannot read {path}: {err.strerror}; expected {expected}") from err
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise DatasetError(f"{path} {_NOT_REGULAR}; expected {expected}")
    return os.fdopen(descriptor, "rb")


def _claimed_elements(handle) -> int:
    """The element count a .npy header claims, read without loading the data."""
    version = np.lib.format.read_magic(handle)
    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                   else np.lib.format.read_array_header_2_0)  # 2.0 and 3.0 headers share a layout
    shape, _, _ = read_header(handle)
    return int(np.prod(shape, dtype=np.float64))


def _read(path: Path) -> np.ndarray:
    expected = "a .npy array saved with np.save (pickled objects are refused)"
    with _open_regular(path, expected) as handle:
        try:
            claimed = _claimed_elements(handle)
            if claimed > MAX_ELEMENTS:
                raise DatasetError(f"{path} claims {claimed:.3g} elements; a dataset file holds at "
                                   f"most {MAX_ELEMENTS:,} (one image or target)")
            handle.seek(0)
            array = np.load(handle, allow_pickle=False)
        except DatasetError:
            raise
        except (OSError, ValueError, EOFError, SyntaxError) as err:
            raise DatasetError(f"cannot read {path}: {err}; expected {expected}") from err
    if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.number)
                                                 or array.dtype == np.bool_):
        raise DatasetError(f"{path} holds {type(array).__name__} of dtype "
                           f"{getattr(array, 'dtype', '?')}; expected a numeric array")
    return array


def _image(array: np.ndarray, path: Path) -> torch.Tensor:
    """(H, W, 3) float in [0, 1] (or uint8 in [0, 255]) -> (3, H, W) float32."""
    if array.ndim != 3 or array.shape[2] != 3:
        raise DatasetError(f"{path} has shape {array.shape}; expected an image (H, W, 3)")
    image = np.ascontiguousarray(array.transpose(2, 0, 1), np.float32)
    return torch.from_numpy(image / 255.0 if array.dtype == np.uint8 else image)


def _resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(3, h, w) -> (3, H, W), bilinear."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return F.interpolate(image[None], size=tuple(size), mode="bilinear", align_corners=False,
                         antialias=True)[0]


# --- finding ids and tasks ---------------------------------------------------------------------

def _ids_in(folder: Path) -> list[int]:
    """The integer stems of the .npy files in `folder`, sorted numerically."""
    ids = []
    for entry in os.scandir(folder):
        stem, suffix = os.path.splitext(entry.name)
        if suffix != ".npy":
            continue
        if not re.fullmatch(r"0|[1-9]\d*", stem):
            raise DatasetError(f"{folder / entry.name} is not named by an instance id; expected "
                               "files named 0.npy, 1.npy, 17.npy, ...")
        if not entry.is_file():
            raise DatasetError(f"{folder / entry.name} {_NOT_REGULAR}; expected a .npy array "
                               "saved with np.save")
        ids.append(int(stem))
    return sorted(ids)


def _preview(ids: Sequence[int]) -> str:
    more = f" and {len(ids) - _PREVIEW} more" if len(ids) > _PREVIEW else ""
    return f"{list(ids[:_PREVIEW])}{more}"


@dataclass(frozen=True)
class _Candidate:
    """A task found on disk: its folder and spec, or why no spec can be built."""

    name: str
    folder: str
    kind: str
    spec: TaskSpec | None
    problem: str = ""


def _spec(name: str, kind: str, channels: int, class_names: Sequence[str], where: str) -> TaskSpec:
    try:
        return TaskSpec(name=name, kind=kind, channels=channels, class_names=tuple(class_names))
    except (TypeError, ValueError) as err:
        raise DatasetError(f"{where}: {err}") from err


def _tasks_from_meta(meta: dict[str, Any], meta_path: Path) -> list[_Candidate]:
    entries = meta.get("tasks")
    if not isinstance(entries, dict) or not entries:
        raise DatasetError(f"{meta_path} has no \"tasks\" table; expected {{task name: "
                           "{\"folder\", \"kind\", \"channels\", \"class_names\"}}")
    found = []
    for name, entry in entries.items():
        where = f"{meta_path} task {name!r}"
        if not isinstance(entry, dict) or not {"folder", "kind", "channels"} <= set(entry):
            raise DatasetError(f"{where} must give \"folder\", \"kind\" and \"channels\"; "
                               f"got {entry!r}")
        folder = entry["folder"]
        if not isinstance(folder, str) or folder in ("", ".", "..") or Path(folder).name != folder:
            raise DatasetError(f"{where} has folder {folder!r}; expected the name of a folder in "
                               "each split, e.g. \"label\" (no path)")
        spec = _spec(name, entry["kind"], entry["channels"], entry.get("class_names") or (), where)
        found.append(_Candidate(name, str(entry["folder"]), spec.kind, spec))
    return found


def _tasks_from_folders(split_dir: Path, meta_path: Path) -> list[_Candidate]:
    """Every registered kind looks for its own folders (`TaskKind.discover`)."""
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    found = []
    for kind in list_kinds():
        for task in get_kind(kind).discover(folders):
            if task.channels is None:
                found.append(_Candidate(task.name, task.folder, kind, None,
                                        f"{split_dir / task.folder} needs {meta_path} with a task "
                                        f"of kind \"{kind}\" giving its \"channels\" (number of "
                                        "classes)"))
            else:
                found.append(_Candidate(task.name, task.folder, kind,
                                        _spec(task.name, kind, task.channels, task.class_names,
                                              str(split_dir / task.folder))))
    return found


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / "meta.json"
    if not os.path.lexists(path):
        return {}
    with _open_regular(path, "a JSON object") as handle:
        text = handle.read(MAX_META_BYTES + 1)
    if len(text) > MAX_META_BYTES:
        raise DatasetError(f"{path} is larger than {MAX_META_BYTES / 2**20:.0f} MB; expected a "
                           "small JSON object naming the tasks")
    try:
        meta = json.loads(text.decode())
    except RecursionError:
        raise DatasetError(f"{path} is nested deeper than Python's JSON reader can follow "
                           f"(about {sys.getrecursionlimit()} levels); expected a JSON object "
                           "naming the tasks") from None
    except ValueError as err:  # bad JSON, bad UTF-8, or an integer of more than 4300 digits
        raise DatasetError(f"cannot read {path}: {err}; expected a JSON object") from err
    if not isinstance(meta, dict):
        raise DatasetError(f"{path} holds {type(meta).__name__}; expected a JSON object")
    return meta


def _order(candidate: _Candidate) -> tuple[int, str]:
    return list_kinds().index(candidate.kind), candidate.name


# --- datasets ----------------------------------------------------------------------------------

class MTLDataset(torch.utils.data.Dataset):
    """One split of a multi-task dataset in the MTAN / LibMTL .npy layout.

    Args:
        root: the dataset folder, holding ``train/`` and ``val/`` (and optionally meta.json).
        split: the split folder to read, e.g. "train" or "val".
        tasks: task names to load (default: every task found), e.g. ["segmentation", "depth"].
        cache: keep decoded items in memory once read; default (None) caches only datasets
            under CACHE_LIMIT_BYTES, judged by the first item's size times the count. Cached
            items share their tensors: do not modify an item in place.
        size: (H, W) to resize every image and target to (after checking each target against
            its own image); default None keeps the files' size.

    Attributes:
        root, split: as given (root as a Path).
        ids: the instance ids, i.e. the integer file stems, sorted; item i has id ids[i].
        tasks: task name -> TaskSpec, ordered by kind as `core.tasks.list_kinds()` (segmentation,
            parts, saliency, edges, depth, normal, classification), then by name.
        image_size: (H, W) of the images (`size` when given).
        meta: the content of meta.json, or {}.

    Items: {"id": int, "image": (3, H, W) float32, task: target} with targets as each kind reads
    them (`TaskSpec`): segmentation, parts (H, W) long (-1 = ignore), saliency, edges (H, W)
    float32 in [0, 1] (-1 = ignore), depth (1, H, W) float32 (0 = invalid), normal (3, H, W)
    float32 (all-zero = invalid), classification () long.

    Raises:
        DatasetError: missing root, split, image or task folders, an empty split, task files that
            do not match the images, a file of the wrong shape, an unreadable or pickled file.
    """

    def __init__(self, root: str | os.PathLike, split: str, tasks: Sequence[str] | None = None,
                 *, cache: bool | None = None, size: tuple[int, int] | None = None):
        self.root = Path(root)
        self.split = split
        if size is not None:
            if len(size) != 2 or any(int(s) < 1 for s in size):
                raise DatasetError(f"size must be (H, W) with both at least 1, got {size!r}")
            size = (int(size[0]), int(size[1]))
        self.size = size
        if not self.root.is_dir():
            raise DatasetError(f"dataset root {self.root} does not exist or is not a folder; "
                               "expected a folder holding train/ and val/")
        split_dir = self.root / split
        if not split_dir.is_dir():
            present = sorted(p.name for p in self.root.iterdir() if p.is_dir())
            raise DatasetError(f"no split folder {split_dir}; splits found in {self.root}: "
                               f"{present or 'none'}")
        self.meta = _read_meta(self.root)
        image_dir = split_dir / "image"
        if not image_dir.is_dir():
            raise DatasetError(f"no image folder {image_dir}; expected {split_dir}/image/{{i}}.npy")
        self.ids = _ids_in(image_dir)
        if not self.ids:
            raise DatasetError(f"split {split!r} is empty: {image_dir} holds no .npy files")
        self._positions = {instance_id: i for i, instance_id in enumerate(self.ids)}

        meta_path = self.root / "meta.json"
        found = (_tasks_from_meta(self.meta, meta_path) if self.meta
                 else _tasks_from_folders(split_dir, meta_path))
        chosen = sorted(self._select(found, tasks, split_dir), key=_order)
        self.tasks: dict[str, TaskSpec] = {c.name: c.spec for c in chosen}
        self._folders = {c.name: c.folder for c in chosen}
        for candidate in chosen:
            self._check_ids(split_dir / candidate.folder, image_dir)

        first = self._load(0)
        self.image_size: tuple[int, int] = tuple(first["image"].shape[-2:])
        item_bytes = sum(t.numel() * t.element_size() for t in first.values()
                         if isinstance(t, torch.Tensor))
        if cache is None:
            cache = item_bytes * len(self.ids) <= CACHE_LIMIT_BYTES
        self._cache: dict[int, dict[str, Any]] | None = {0: first} if cache else None

    @staticmethod
    def _select(found: list[_Candidate], tasks: Sequence[str] | None, split_dir: Path):
        available = [c.name for c in sorted(found, key=_order)]
        if not found:
            hints = ", ".join(get_kind(kind).folder_hint for kind in list_kinds())
            raise DatasetError(f"no task folder in {split_dir}; expected one or more of {hints}")
        if tasks is None:
            chosen = found
        else:
            names = [tasks] if isinstance(tasks, str) else list(tasks)
            unknown = [n for n in names if n not in available]
            if unknown or not names:
                raise DatasetError(f"unknown tasks {unknown or names} for {split_dir}; "
                                   f"available: {available}")
            chosen = [c for c in found if c.name in names]
        for candidate in chosen:
            if candidate.spec is None:
                raise DatasetError(candidate.problem)
            if not (split_dir / candidate.folder).is_dir():
                raise DatasetError(f"task {candidate.name!r} has no folder "
                                   f"{split_dir / candidate.folder}")
        return chosen

    def _check_ids(self, folder: Path, image_dir: Path) -> None:
        ids = _ids_in(folder)
        if ids == self.ids:
            return
        missing = sorted(set(self.ids) - set(ids))
        extra = sorted(set(ids) - set(self.ids))
        parts = [f"missing ids {_preview(missing)}" if missing else "",
                 f"ids without an image {_preview(extra)}" if extra else ""]
        raise DatasetError(f"{folder} does not match {image_dir}: "
                           f"{'; '.join(p for p in parts if p)}")

    def _path(self, folder: str, instance_id: int) -> Path:
        return self.root / self.split / folder / f"{instance_id}.npy"

    def _load(self, index: int) -> dict[str, Any]:
        instance_id = self.ids[index]
        image_path = self._path("image", instance_id)
        image = _image(_read(image_path), image_path)
        size = tuple(image.shape[-2:])
        item: dict[str, Any] = {"id": instance_id, "image": image}
        for name, spec in self.tasks.items():
            path = self._path(self._folders[name], instance_id)
            try:
                item[name] = spec.load_target(_read(path), size)
            except ValueError as err:
                if isinstance(err, DatasetError):
                    raise
                raise DatasetError(f"{path} {err}") from err
        if self.size is not None:
            item["image"] = _resize_image(image, self.size)
            for name, spec in self.tasks.items():
                item[name] = spec.resize_target(item[name], self.size)
        return item

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = operator.index(index)
        if i < 0:
            i += len(self.ids)
        if not 0 <= i < len(self.ids):
            raise IndexError(f"index {index} out of range for {len(self.ids)} instances")
        if self._cache is None:
            return self._load(i)
        if i not in self._cache:
            self._cache[i] = self._load(i)
        return dict(self._cache[i])

    def index_of(self, instance_id: int) -> int:
        """Position of an instance id in `ids`; DatasetError for an id not in this split."""
        try:
            return self._positions[operator.index(instance_id)]
        except (KeyError, TypeError):
            raise DatasetError(f"unknown instance id {instance_id!r} in {self.root / self.split}; "
                               f"ids are {_preview(self.ids)} ({len(self.ids)} in all)") from None

    def batch(self, instance_ids: Iterable[int]) -> dict[str, torch.Tensor]:
        """Stacked items: {"id": (B,) long, "image": (B, 3, H, W), task: (B, ...)}."""
        items = [self[self.index_of(i)] for i in instance_ids]
        if not items:
            raise DatasetError("batch() needs at least one instance id")
        sizes = {tuple(item["image"].shape[-2:]) for item in items}
        if len(sizes) > 1:
            raise DatasetError(f"images of {self.root / self.split} have different sizes "
                               f"{sorted(sizes)[:4]}; give the dataset one size (MTLDataset(size=(H, W)))")
        return {key: torch.tensor([item[key] for item in items], dtype=torch.long)
                if key == "id" else torch.stack([item[key] for item in items])
                for key in items[0]}

    def subset(self, instance_ids: Iterable[int]) -> MTLSubset:
        """The instances with these ids, in this order, as a dataset with the same interface."""
        return MTLSubset(self, instance_ids)


class MTLSubset(torch.utils.data.Subset):
    """Some instances of an MTLDataset, by id, in the given order; items as in the dataset."""

    def __init__(self, dataset: MTLDataset, instance_ids: Iterable[int]):
        ids = [operator.index(i) for i in instance_ids]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise DatasetError(f"subset ids must be distinct; repeated: {_preview(repeated)}")
        super().__init__(dataset, [dataset.index_of(i) for i in ids])
        self.ids = ids
        self._positions = {instance_id: i for i, instance_id in enumerate(ids)}

    @property
    def root(self) -> Path:
        return self.dataset.root

    @property
    def split(self) -> str:
        return self.dataset.split

    @property
    def tasks(self) -> dict[str, TaskSpec]:
        return self.dataset.tasks

    @property
    def image_size(self) -> tuple[int, int]:
        return self.dataset.image_size

    def index_of(self, instance_id: int) -> int:
        """Position of an instance id in this subset; DatasetError if it is not in it."""
        try:
            return self._positions[operator.index(instance_id)]
        except (KeyError, TypeError):
            raise DatasetError(f"instance id {instance_id!r} is not in this subset of "
                               f"{self.root / self.split}; ids are {_preview(self.ids)} "
                               f"({len(self.ids)} in all)") from None

    def batch(self, instance_ids: Iterable[int]) -> dict[str, torch.Tensor]:
        ids = list(instance_ids)
        for i in ids:
            self.index_of(i)
        return self.dataset.batch(ids)

    def subset(self, instance_ids: Iterable[int]) -> MTLSubset:
        ids = list(instance_ids)
        for i in ids:
            self.index_of(i)
        return MTLSubset(self.dataset, ids)


def split_calibration_test(ids: Iterable[int]) -> tuple[list[int], list[int]]:
    """Divide the val split, once and deterministically by instance id, into calibration and test.

    The ids are sorted; every fifth one (positions 0, 5, 10, ... of the sorted list) goes to
    calibration (20%: unseen data an unlearning method may look at), the rest to test (80%:
    reporting only). The result depends only on the set of ids, never on their order or a seed.

    Args:
        ids: distinct instance ids, e.g. ``MTLDataset(root, "val").ids``.
    Returns:
        (calibration_ids, test_ids), both sorted.
    """
    ordered = sorted(operator.index(i) for i in ids)
    if len(set(ordered)) < len(ordered):
        raise DatasetError("split_calibration_test needs distinct ids; got repeats")
    return ordered[::5], [i for k, i in enumerate(ordered) if k % 5]
