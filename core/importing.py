"""`mtu import`: turn a PyTorch checkpoint trained elsewhere into one of ours.

A state dict (`.safetensors`, or `.pt` / `.pth` / `.bin` read with `weights_only=True`), a
registered architecture that rebuilds the model, the dataset folder it was trained on (.npy
layout) and its training ids become NAME.safetensors + NAME.json; the card carries the imported
model's metrics on train and val, so a wrong import shows at once.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from core.checkpoints import CheckpointError, ModelCard, save_checkpoint
from core.data.sources import DataSource
from core.models import MultiTaskModel, build_model, read_state_dict
from core.outputs import check_checkpoint_output
from core.training import evaluate


class ImportMismatch(CheckpointError):
    """The state dict does not fit the architecture; `.problems` lists every mismatch."""

    def __init__(self, path: Path, problems: list[str]):
        self.problems = problems
        super().__init__(f"{path} does not fit the architecture ({len(problems)} mismatches):\n  "
                         + "\n  ".join(problems)
                         + "\nstrip a key prefix (--strip-prefix module.) or rename one "
                           "(--rename decoders.=heads.), or pick the architecture arguments "
                           "that built it (--arg KEY=VALUE)")


def parse_train_ids(spec: str | Path, available: Sequence[int]) -> list[int]:
    """The training ids: "all" (every id of the train split), or a file of integer ids separated
    by commas, spaces or new lines. Each must be an id of the train split."""
    if str(spec) == "all":
        return list(available)
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"training ids {str(spec)!r}: give 'all' or a file of ids")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise CheckpointError(f"cannot read {path}: {error}; expected a text file of instance "
                              "ids") from error
    tokens = [t for t in re.split(r"[\s,]+", text) if t]
    bad = [t[:24] for t in tokens if not re.fullmatch(r"[0-9]{1,18}", t)]
    if bad:
        raise CheckpointError(f"{path} holds {bad[:5]}, which are not instance ids; expected "
                              "non-negative integers of at most 18 digits separated by commas, "
                              "spaces or new lines")
    ids = sorted({int(t) for t in tokens})
    unknown = sorted(set(ids) - set(available))
    if unknown:
        raise CheckpointError(f"{path} names ids {unknown[:10]} that are not in the train split "
                              f"({len(available)} ids)")
    if not ids:
        raise CheckpointError(f"{path} lists no training ids")
    return ids


def check_fit(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise ImportMismatch listing every missing key, unexpected key and shape mismatch between
    `model` (possibly on the "meta" device) and `state`."""
    expected = model.state_dict()
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in state]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in state.items() if k not in expected]
    problems += [f"shape of {k}: model {tuple(v.shape)}, file {tuple(state[k].shape)}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        raise ImportMismatch(path, problems)


def fit_state_dict(model: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load `state` into `model`, or raise ImportMismatch (`check_fit`)."""
    check_fit(model, state, path)
    expected = model.state_dict()
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def check_finite(state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Raise CheckpointError naming the floating-point tensors that hold NaN or Inf."""
    bad = sorted(key for key, value in state.items()
                 if value.is_floating_point() and not bool(value.isfinite().all()))
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise CheckpointError(f"{path} holds NaN or Inf in {bad[:5]}{more}: a diverged model is "
                              "not imported")


def rename_keys(state: Mapping[str, torch.Tensor], renames: Sequence[tuple[str, str]]
                ) -> dict[str, torch.Tensor]:
    """Replace each key's leading OLD with NEW, for the first (OLD, NEW) that matches."""
    out = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


RECIPE_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "seed")
"""The recipe keys the retrain oracle reads from a card's `training` (as `mtu train` writes them)."""
ENGINE_OPTIMIZER = "adam"
"""The optimiser the retrain oracle trains with (Adam with a cosine learning-rate decay, equal
task-loss weights: `core.training.train`)."""


def parse_recipe(epochs: int | None = None, batch_size: int | None = None, lr: float | None = None,
                 weight_decay: float | None = None, seed: int | None = None,
                 optimizer: str | None = None, loss_weights: Mapping[str, float] | None = None,
                 seconds: float | None = None) -> dict[str, Any]:
    """The training recipe of an imported model as its card records it under `training`: the
    keys given (epochs, batch_size, lr, weight_decay, seed as `mtu train` records them, the
    optimiser's name, the task-loss weights, the training time in seconds) and "recipe":
    "given"; with no epochs, "recipe": "unknown" and nothing else (the retrain oracle then
    trains with the engine's defaults and says it is approximate). Raises CheckpointError
    naming a value that is out of range."""
    if epochs is None:
        given = [name for name, value in (("batch_size", batch_size), ("lr", lr), ("optimizer", optimizer),
                                          ("loss_weights", loss_weights), ("seconds", seconds))
                 if value is not None]
        if given:
            raise CheckpointError(f"a training recipe with {', '.join(given)} needs its number of epochs "
                                  "(--epochs N), or give no recipe at all (it is then recorded as unknown)")
        return {"recipe": "unknown"}
    checks = (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("seed", seed, 0))
    for name, value, low in checks:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise CheckpointError(f"training recipe {name}={value!r}; accepted: an integer >= {low}")
    for name, number in (("lr", lr), ("weight_decay", weight_decay), ("seconds", seconds)):
        if number is not None and not (isinstance(number, int | float) and math.isfinite(number)
                                       and number >= 0 and (name != "lr" or number > 0)):
            raise CheckpointError(f"training recipe {name}={number!r}; accepted: a number "
                                  f"{'> 0' if name == 'lr' else '>= 0'}")
    weights = dict(loss_weights or {})
    bad = {k: v for k, v in weights.items()
           if isinstance(v, bool) or not (isinstance(v, int | float) and math.isfinite(v) and v >= 0)}
    if bad:
        raise CheckpointError(f"training recipe loss weights {bad}; accepted: numbers >= 0 per task")
    recipe: dict[str, Any] = {"recipe": "given", "epochs": epochs}
    recipe.update({k: v for k, v in (("batch_size", batch_size), ("lr", lr), ("weight_decay", weight_decay),
                                     ("seed", seed)) if v is not None})
    if optimizer:
        recipe["optimizer"] = optimizer.strip().lower()
    if weights:
        recipe["loss_weights"] = {k: float(v) for k, v in weights.items()}
    if seconds is not None:
        recipe["seconds"] = float(seconds)
    return recipe


def oracle_approximation(training: Mapping[str, Any]) -> str | None:
    """Why the retrain oracle of a model whose card's `training` is this is not exact, in words,
    or None when it retrains with the model's own recipe (a model trained by `mtu train`, or
    imported with a recipe the engine runs: Adam, equal task-loss weights)."""
    if "epochs" not in training or training.get("recipe") == "unknown":
        return ("approximate: the model's training recipe is unknown, so the oracle retrains with the "
                "engine's defaults (60 epochs, batch 32, lr 0.002, Adam); give the recipe on import "
                "(`mtu import --epochs ...`) or on the Model page")
    reasons = []
    optimizer = training.get("optimizer")
    if optimizer and str(optimizer).lower() != ENGINE_OPTIMIZER:
        reasons.append(f"the model was trained with {optimizer}, the oracle retrains with Adam")
    weights = training.get("loss_weights") or {}
    if len({float(v) for v in weights.values()}) > 1:
        shown = ", ".join(f"{k} {v:g}" for k, v in weights.items())
        reasons.append(f"the model's task losses were weighted ({shown}), the oracle weighs them equally")
    return f"approximate: {'; '.join(reasons)}" if reasons else None


def oracle_seconds(training: Mapping[str, Any], retain_share: float) -> float | None:
    """The retrain oracle's expected time on the machine that trained the model: the recorded
    training time x the share of the training instances it keeps; None when no training time is
    recorded (an imported model without one)."""
    seconds = training.get("seconds")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or not seconds > 0:
        return None
    return float(seconds) * retain_share


def held_data(source: DataSource, train_set, val_set) -> DataSource:
    """The data source a card records for a dataset folder: what the folder holds (its numbers of
    train and val instances and its image size), not the synthetic generator's defaults."""
    if source.root is None:
        return source
    height, width = train_set.image_size
    return DataSource(benchmark=source.benchmark, root=source.root, n_train=len(train_set.ids),
                      n_val=len(val_set.ids), size=(int(height), int(width)), tasks=source.tasks)


def check_recipe_tasks(recipe: Mapping[str, Any], tasks: Sequence[str]) -> None:
    """Raise CheckpointError when the recipe's loss weights name a task the model does not have."""
    unknown = sorted(set(recipe.get("loss_weights") or {}) - set(tasks))
    if unknown:
        raise CheckpointError(f"training recipe loss weights name {unknown}, which are not tasks of the "
                              f"model; its tasks: {', '.join(tasks)}")


def with_recipe(card: ModelCard, recipe: Mapping[str, Any]) -> ModelCard:
    """A copy of `card` whose `training` records `recipe` (`parse_recipe`) instead of the recipe
    it had (the data, the import's origin and anything else it records are kept)."""
    check_recipe_tasks(recipe, [task["name"] for task in card.tasks])
    copy = ModelCard.from_dict(json.loads(card.to_json()))
    kept = {k: v for k, v in card.training.items()
            if k not in (*RECIPE_KEYS, "recipe", "optimizer", "loss_weights", "seconds")}
    copy.training = {**kept, **recipe}
    copy.created = ""
    return copy


def import_checkpoint(state_path: str | Path, architecture: Mapping[str, Any], data_root: str | Path,
                      train_ids: str | Path = "all", tasks: Sequence[str] | None = None,
                      strip_prefix: str = "", renames: Sequence[tuple[str, str]] = (),
                      out: str | Path | None = None, device: str = "cpu", overwrite: bool = False,
                      recipe: Mapping[str, Any] | None = None
                      ) -> tuple[MultiTaskModel, ModelCard, Path | None]:
    """Import a state dict; returns (model, card, weights path when `out` is given).

    Args:
        state_path: the state dict file.
        architecture: {"name": registered architecture, "args": {...}} (plugins loaded first).
        data_root: the dataset folder (.npy layout) the model was trained on; its tasks (or the
            subset `tasks`, in that order) are the model's tasks.
        train_ids: "all" or a file of the ids the model was trained on (`parse_train_ids`).
        strip_prefix: removed from the front of every key that has it, e.g. "module.".
        renames: (OLD, NEW) key prefixes, e.g. ("decoders.", "heads.") for LibMTL's layout.
        out, overwrite: the checkpoint to write, under the output policy of `core.outputs`
            (never an input; an existing one only with `overwrite`), checked before any work.
        recipe: how the model was trained (`parse_recipe`), recorded in the card's `training`
            for the retrain oracle; None records the recipe as unknown (the oracle is then
            approximate, `oracle_approximation`).
    The card's `training.data` records what the folder holds: its numbers of train and val
    instances and its image size (`held_data`).
    """
    recipe = dict(recipe) if recipe is not None else parse_recipe()
    state_path = Path(state_path)
    if out is not None:
        inputs = [state_path] if str(train_ids) == "all" else [state_path, Path(train_ids)]
        check_checkpoint_output(out, inputs, overwrite)
    source = DataSource.parse(str(data_root))
    if tasks:
        source = DataSource(benchmark=source.benchmark, root=source.root, tasks=tuple(tasks))
    train_set, val_set = source.open("train"), source.open("val")
    ids = parse_train_ids(train_ids, train_set.ids)
    state = rename_keys(read_state_dict(state_path, strip_prefix), renames)
    check_finite(state, state_path)
    specs = list(train_set.tasks.values())
    try:  # the dataset's tasks against the file's shapes, before any memory is allocated for them
        with torch.device("meta"):
            planned = build_model(architecture, specs)
    except (NotImplementedError, RuntimeError):  # a builder that cannot run on "meta"
        planned = None
    if planned is not None:
        check_fit(planned, state, state_path)
    check_recipe_tasks(recipe, list(train_set.tasks))
    model = build_model(architecture, specs)
    fit_state_dict(model, state, state_path)
    model.eval()
    card = ModelCard(
        benchmark=source.benchmark,
        tasks=[task.to_dict() for task in model.tasks.values()],
        architecture=dict(model.architecture),
        training={"data": held_data(source, train_set, val_set).to_dict(),
                  "imported_from": str(state_path.resolve()), **recipe},
        train_ids=ids,
        metrics={"train": evaluate(model, train_set, ids, device=device),
                 "val": evaluate(model, val_set, device=device)},
    )
    policy = "overwrite" if overwrite else "beside"
    weights = save_checkpoint(model.cpu(), card, out, if_exists=policy) if out is not None else None
    return model.cpu().eval(), card, weights
