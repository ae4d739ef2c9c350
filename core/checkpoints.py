"""Checkpoints: safetensors weights + a JSON model card. Loading never unpickles anything.

A checkpoint named ``NAME`` is two files side by side: ``NAME.safetensors`` (the state dict) and
``NAME.json`` (the model card). The card says how to rebuild the model (tasks, architecture), what
it was trained on (benchmark, seed, training instance ids), how good it is (per-task metrics on
train and val), which library versions made it, and, for unlearned models, the request and the
parent checkpoint. The card carries the SHA-256 of the weights so a swapped or truncated file is
caught before use.
"""

from __future__ import annotations

import hashlib
import json
import platform
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
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        required = ("benchmark", "tasks", "architecture")
        missing = [key for key in required if key not in data]
        if missing:
            raise CheckpointError(f"model card lacks {', '.join(missing)}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"model card has unknown fields {unknown}; accepted: {sorted(known)}")
        for key, kinds in _FIELD_TYPES.items():
            if key in data and not isinstance(data[key], kinds):
                accepted = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
                raise CheckpointError(f"model card field {key!r} must be {accepted}, "
                                      f"got {type(data[key]).__name__} {str(data[key])[:80]!r}")
        ids = data.get("train_ids", [])
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise CheckpointError("model card field 'train_ids' must list integer instance ids")
        if not all(isinstance(t, dict) for t in data["tasks"]) or not data["tasks"]:
            raise CheckpointError("model card field 'tasks' must list at least one task object")
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


def save_checkpoint(model: MultiTaskModel, card: ModelCard, path: str | Path) -> Path:
    """Write NAME.safetensors and NAME.json; fills the card's versions, date and weights hash.

    Returns the weights path.
    """
    weights, card_path = checkpoint_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    save_file(state, str(weights))
    card.versions = library_versions()
    card.created = card.created or datetime.now(timezone.utc).isoformat(timespec="seconds")
    card.architecture = dict(model.architecture)
    card.tasks = [task.to_dict() for task in model.tasks.values()]
    card.weights_sha256 = _sha256(weights)
    card_path.write_text(card.to_json() + "\n")
    return weights


def read_card(path: str | Path) -> ModelCard:
    """Read and check a model card (JSON only; nothing is executed or unpickled)."""
    _, card_path = checkpoint_paths(path)
    if not card_path.is_file():
        raise CheckpointError(f"model card {card_path} not found")
    try:
        data = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"model card {card_path} is not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise CheckpointError(f"model card {card_path} must hold a JSON object")
    card = ModelCard.from_dict(data)
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
    if not weights.is_file():
        raise CheckpointError(f"weights file {weights} not found")
    if card.weights_sha256 and _sha256(weights) != card.weights_sha256:
        raise CheckpointError(f"weights file {weights} does not match its card "
                              "(SHA-256 differs): truncated, altered, or from another checkpoint")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"weights file {weights} is truncated or not safetensors: {error}") from error
    try:
        model = build_model(card.architecture, card.task_specs())
    except ArchitectureError as error:
        raise CheckpointError(f"model card {card_path}: {error}") from error
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"model card {card_path} describes no buildable model: {error}") from error
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))[:5]
        extra = sorted(set(found) - set(expected))[:5]
        shapes = [f"{key}: card {expected[key]} vs weights {found[key]}"
                  for key in sorted(set(expected) & set(found)) if expected[key] != found[key]][:5]
        raise CheckpointError(f"weights {weights} do not match the model in its card: "
                              f"missing {missing}, unexpected {extra}, shape mismatches {shapes}")
    model.load_state_dict(state)
    return model.to(device).eval(), card


def sample_model_path(benchmark: str) -> Path:
    """Path (without suffix) of the shipped sample model for a synthetic benchmark."""
    available = sorted(p.stem for p in SAMPLE_MODELS_DIR.glob("*.json"))
    if benchmark not in available:
        raise CheckpointError(f"no sample model {benchmark!r}; shipped: {', '.join(available) or 'none'}")
    return SAMPLE_MODELS_DIR / benchmark


def load_sample(benchmark: str = "synthetic-indoor", device: str | torch.device = "cpu"):
    """One-line access to a shipped sample model: ``model, card = load_sample('synthetic-indoor')``."""
    return load_checkpoint(sample_model_path(benchmark), device=device)
