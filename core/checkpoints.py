"""Checkpoints: safetensors weights + a JSON model card. Loading never unpickles anything.

A checkpoint named ``NAME`` is two files side by side: ``NAME.safetensors`` (the state dict) and
``NAME.json`` (the model card). The card says how to rebuild the model (tasks, architecture), what
it was trained on (benchmark, seed, training instance ids), how good it is (per-task metrics on
train and val), which library versions made it, and, for unlearned models, the request and the
parent checkpoint. The card carries the SHA-256 of the weights so a swapped or truncated file is
caught before use.

Writes are atomic: each file goes to a temporary name in the same folder, is flushed, fsynced and
renamed, and the card (with the weights' hash) comes last, so a weights file without its card is
never taken for a checkpoint. Writers to one folder take turns (an advisory lock on the folder).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from core.models import ArchitectureError, MultiTaskModel, build_model, normalise_architecture
from core.tasks import TaskSpec, UnknownTaskKind

CARD_VERSION = 1
MAX_CARD_BYTES = 32 * 2**20
"""A model card larger than this is refused before it is parsed."""
SAMPLE_MODELS_DIR = Path(__file__).resolve().parent.parent / "sample_models"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, truncated, or inconsistent with its card."""


@dataclass
class ModelCard:
    """What a checkpoint is. Metrics are {split: {task: {metric: value}}}."""

    benchmark: str
    tasks: list[dict[str, Any]]
    architecture: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    train_ids: list[int] = field(default_factory=list)
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    parent: str | None = None
    request: dict[str, Any] | None = None
    created: str = ""
    weights_sha256: str = ""
    card_version: int = CARD_VERSION

    def task_specs(self) -> list[TaskSpec]:
        return [TaskSpec.from_dict(task) for task in self.tasks]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "model card") -> ModelCard:
        """The card in `data`, after checking its fields' types; metrics must be numbers, since
        every reader formats and compares them. `source` (e.g. "model card NAME.json") opens
        each message."""
        required = ("benchmark", "tasks", "architecture")
        missing = [key for key in required if key not in data]
        if missing:
            raise CheckpointError(f"{source} lacks {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"{source} has unknown fields {unknown}; accepted: {sorted(known)}")
        for key, kinds in _FIELD_TYPES.items():
            if key in data and not isinstance(data[key], kinds):
                accepted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise CheckpointError(f"{source} field {key!r} must be {accepted}, "
                                      f"got {type(data[key]).__name__} {str(data[key])[:80]!r}")
        ids = data.get("train_ids", [])
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise CheckpointError(f"{source} field 'train_ids' must list integer instance ids")
        if not all(isinstance(t, dict) for t in data["tasks"]) or not data["tasks"]:
            raise CheckpointError(f"{source} field 'tasks' must list at least one task object")
        if (problem := _metrics_problem(data.get("metrics", {}))) is not None:
            raise CheckpointError(f"{source}: metrics {problem}; metrics must be numbers, as "
                                  '{"split": {"task": {"metric": 0.5}}}')
        return cls(**data)

    def data_source(self):
        """The `DataSource` the card records under training.data, or None when it records none
        (a model trained elsewhere: the data must then be named by the caller)."""
        from core.data.sources import DataSource

        data = self.training.get("data")
        if data is None:
            return None
        try:
            return DataSource.from_dict(data)
        except (TypeError, ValueError, KeyError) as error:
            raise CheckpointError(f"model card training.data {data!r} is not a data source: "
                                  f"{error}") from error


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _metrics_problem(metrics: dict[str, Any]) -> str | None:
    """Where a card's metrics are not numbers ('val/depth/abs_err is "high"'), else None. They are
    {split: {task: {metric: number}}}, or an unlearned model's {"before_after": [row, ...]} whose
    rows hold numbers under "before" and "after"."""
    for split, tasks in metrics.items():
        if isinstance(tasks, list):
            for row in tasks:
                if not isinstance(row, dict):
                    return f"{split} holds {_shown(row)}, not a row object"
                for key in ("before", "after"):
                    if not _is_number(row.get(key)):
                        return (f"{split}/{row.get('task')}/{row.get('metric')} {key} is "
                                f"{_shown(row.get(key))}")
            continue
        if not isinstance(tasks, dict):
            return f"{split} is {_shown(tasks)}, not {{task: {{metric: value}}}}"
        for task, values in tasks.items():
            if not isinstance(values, dict):
                return f"{split}/{task} is {_shown(values)}, not {{metric: value}}"
            for metric, value in values.items():
                if not _is_number(value):
                    return f"{split}/{task}/{metric} is {_shown(value)}"
    return None


def _shown(value: Any) -> str:
    """A value as the card's JSON writes it, cut to 80 characters."""
    return json.dumps(value, default=str)[:80]


_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "benchmark": (str,), "tasks": (list,), "architecture": (dict,), "training": (dict,),
    "train_ids": (list,), "metrics": (dict,), "versions": (dict,), "parent": (str, type(None)),
    "request": (dict, type(None)), "created": (str,), "weights_sha256": (str,),
    "card_version": (int,),
}


def library_versions() -> dict[str, str]:
    import numpy
    import safetensors

    from core import __version__

    return {"mtunlearn": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """(weights, card) paths for a checkpoint given as NAME, NAME.safetensors or NAME.json.

    NAME may itself contain dots ("indoor-r0.1"): only those two suffixes are replaced."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def folder_lock(folder: Path):
    """An exclusive advisory lock on `folder` (released when the process dies); none where the
    platform has no fcntl."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        os.close(handle)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def _fsync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def save_checkpoint(model: MultiTaskModel, card: ModelCard, path: str | Path,
                    if_exists: str = "overwrite",
                    on_commit: Callable[[Path, str], None] | None = None) -> Path:
    """Write NAME.safetensors and NAME.json atomically; fills the card's versions, date and
    weights hash. Returns the weights path actually written.

    if_exists: what to do when NAME already holds a checkpoint (perhaps written by another run
    since this one started): "overwrite" it, write "beside" it under NAME-<date>-<random>, or
    "refuse" (CheckpointError). Overwriting removes the old card first, so a run killed midway
    leaves no card that does not match its weights. "content" stores by content: NAME is
    replaced by the first 16 hex digits of the weights' SHA-256 (`content_name`) in NAME's
    folder, and a checkpoint of identical weights already there is kept as it is, card included.

    on_commit(weights path, weights SHA-256), when given, is called just before the files are
    renamed into place (or before an identical stored checkpoint is reused), while the folder
    is locked: a ledger records there the path the result will have, so a process killed after
    the rename leaves a result that can be found again. If it raises, nothing is renamed.
    """
    if if_exists not in ("overwrite", "beside", "refuse", "content"):
        raise ValueError(f"if_exists={if_exists!r}; accepted: overwrite, beside, refuse, content")
    weights, card_path = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    card.versions = library_versions()
    card.created = card.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    card.architecture = dict(model.architecture)
    card.tasks = [task.to_dict() for task in model.tasks.values()]
    weights_tmp, card_tmp = _temporary(weights), _temporary(card_path)
    try:
        save_file(state, str(weights_tmp))
        _fsync(weights_tmp)
        card.weights_sha256 = _sha256(weights_tmp)
        card_tmp.write_text(card.to_json() + "\n")
        _fsync(card_tmp)
        if if_exists == "content":
            weights, card_path = checkpoint_paths(weights.parent / content_name(card.weights_sha256))
        with folder_lock(weights.parent):
            if if_exists == "content" and card_path.is_file() and weights.is_file():
                if on_commit is not None:
                    on_commit(weights, card.weights_sha256)
                return weights  # the same weights are stored already: one copy, its first card
            if card_path.exists() or weights.exists():
                if if_exists == "refuse":
                    raise CheckpointError(f"{card_path} already exists; choose another output name")
                if if_exists == "beside":
                    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
                    base = card_path.with_suffix("")
                    weights, card_path = checkpoint_paths(
                        base.with_name(f"{base.name}-{stamp}-{secrets.token_hex(3)}"))
            if on_commit is not None:
                on_commit(weights, card.weights_sha256)
            card_path.unlink(missing_ok=True)  # an overwritten card goes first: none can mismatch
            os.replace(weights_tmp, weights)
            os.replace(card_tmp, card_path)
            _fsync(weights.parent)
    finally:
        weights_tmp.unlink(missing_ok=True)
        card_tmp.unlink(missing_ok=True)
    return weights


def content_name(weights_sha256: str) -> str:
    """The name of a checkpoint in a content-addressed folder: its weights' SHA-256, 16 hex digits."""
    return weights_sha256[:16]


def checkpoint_zip(path: str | Path) -> bytes:
    """NAME.safetensors and NAME.json in one zip (a download of the checkpoint), after
    `check_weights`."""
    import io
    import zipfile

    weights, card_path = checkpoint_paths(path)
    check_weights(weights)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(weights, weights.name)
        archive.write(card_path, card_path.name)
    return buffer.getvalue()


def check_weights(path: str | Path, card: ModelCard | None = None) -> Path:
    """The weights file of a checkpoint, after checking that it exists, matches its card's
    SHA-256 and is readable safetensors (the tensors are not loaded). Raises CheckpointError."""
    weights, card_path = checkpoint_paths(path)
    card = card or read_card(card_path)
    if not weights.is_file():
        raise CheckpointError(f"weights file {weights} not found")
    if not card.weights_sha256:
        raise CheckpointError(f"model card {card_path} has no weights_sha256, so its weights "
                              "cannot be checked; save the checkpoint again with mtu")
    if _sha256(weights) != card.weights_sha256:
        raise CheckpointError(f"weights file {weights} does not match its card "
                              "(SHA-256 differs): truncated, altered, or from another checkpoint")
    try:
        from safetensors import safe_open

        with safe_open(str(weights), framework="pt") as handle:
            handle.keys()
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"weights file {weights} is truncated or not safetensors: {error}") from error
    return weights


def read_card(path: str | Path) -> ModelCard:
    """Read and check a model card (JSON only; nothing is executed or unpickled)."""
    _, card_path = checkpoint_paths(path)
    if not card_path.is_file():
        raise CheckpointError(f"model card {card_path} not found")
    size = card_path.stat().st_size
    if size > MAX_CARD_BYTES:
        raise CheckpointError(f"model card {card_path} is {size / 2**20:.0f} MB; a card is at most "
                              f"{MAX_CARD_BYTES / 2**20:.0f} MB")
    try:
        data = json.loads(card_path.read_text())
    except ValueError as error:  # bad JSON, bad UTF-8, or an integer of more than 4300 digits
        raise CheckpointError(f"model card {card_path} is not valid JSON: {error}") from error
    except RecursionError as error:
        raise CheckpointError(f"model card {card_path} is nested too deeply to be a model card"
                              ) from error
    if not isinstance(data, dict):
        raise CheckpointError(f"model card {card_path} must hold a JSON object")
    card = ModelCard.from_dict(data, f"model card {card_path}")
    try:
        card.task_specs()
    except UnknownTaskKind as error:
        raise CheckpointError(f"model card {card_path}: {error}") from error
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"model card {card_path} has a bad task: {error}") from error
    try:
        normalise_architecture(card.architecture)
    except ArchitectureError as error:
        raise CheckpointError(f"model card {card_path}: {error}") from error
    return card


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu"
                    ) -> tuple[MultiTaskModel, ModelCard]:
    """Load a checkpoint into a fresh model of its card's architecture, in eval mode.

    The architecture is built through the registry (`core.models.build_model`); a plugin
    architecture needs its plugin loaded first (`core.models.load_plugins`).

    Raises CheckpointError when a file is missing, truncated, altered since it was saved, or when
    the weights do not match the model the card describes (names the differing tensors).
    """
    weights, card_path = checkpoint_paths(path)
    card = read_card(card_path)
    check_weights(weights, card)
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"weights file {weights} is truncated or not safetensors: {error}") from error
    bad = [key for key, value in state.items()
           if value.is_floating_point() and not bool(value.isfinite().all())]
    if bad:
        raise CheckpointError(f"weights file {weights} holds NaN or Inf in {bad[:5]}: a diverged "
                              "model is not loaded")
    try:
        try:  # the card's shapes, compared before any memory is allocated for them
            with torch.device("meta"):
                _compare_shapes(build_model(card.architecture, card.task_specs()), state, weights)
        except (NotImplementedError, RuntimeError):  # a builder that cannot run on "meta"
            pass
        model = build_model(card.architecture, card.task_specs())
        _compare_shapes(model, state, weights)
    except CheckpointError:
        raise
    except ArchitectureError as error:
        raise CheckpointError(f"model card {card_path}: {error}") from error
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"model card {card_path} describes no buildable model: {error}") from error
    model.load_state_dict(state)
    return model.to(device).eval(), card


def _compare_shapes(model: torch.nn.Module, state: dict[str, torch.Tensor], weights: Path) -> None:
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:5]
        extra = sorted(set(found) - set(expected))[:5]
        shapes = [f"{key}: card {expected[key]} vs weights {found[key]}"
                  for key in sorted(set(expected) & set(found)) if expected[key] != found[key]][:5]
        raise CheckpointError(f"weights {weights} do not match the model in its card: "
                              f"missing {missing}, unexpected {extra}, shape mismatches {shapes}")


def sample_model_path(benchmark: str) -> Path:
    """Path (without suffix) of the shipped sample model for a synthetic benchmark."""
    available = sorted(p.stem for p in SAMPLE_MODELS_DIR.glob("*.json"))
    if benchmark not in available:
        raise CheckpointError(f"no sample model {benchmark!r}; shipped: {', '.join(available) or 'none'}")
    return SAMPLE_MODELS_DIR / benchmark


def load_sample(benchmark: str = "synthetic-indoor", device: str | torch.device = "cpu"):
    """One-line access to a shipped sample model: ``model, card = load_sample('synthetic-indoor')``."""
    return load_checkpoint(sample_model_path(benchmark), device=device)
