"""`mtu import`: turn a PyTorch checkpoint trained elsewhere into one of ours.

A state dict (`.safetensors`, or `.pt` / `.pth` / `.bin` read with `weights_only=True`), a
registered architecture that rebuilds the model, the dataset folder it was trained on (.npy
layout) and its training ids become NAME.safetensors + NAME.json; the card carries the imported
model's metrics on train and val, so a wrong import shows at once.
"""

from __future__ import annotations

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


def import_checkpoint(state_path: str | Path, architecture: Mapping[str, Any], data_root: str | Path,
                      train_ids: str | Path = "all", tasks: Sequence[str] | None = None,
                      strip_prefix: str = "", renames: Sequence[tuple[str, str]] = (),
                      out: str | Path | None = None, device: str = "cpu", overwrite: bool = False
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
    """
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
    model = build_model(architecture, specs)
    fit_state_dict(model, state, state_path)
    model.eval()
    card = ModelCard(
        benchmark=source.benchmark,
        tasks=[task.to_dict() for task in model.tasks.values()],
        architecture=dict(model.architecture),
        training={"data": source.to_dict(), "imported_from": str(state_path.resolve())},
        train_ids=ids,
        metrics={"train": evaluate(model, train_set, ids, device=device),
                 "val": evaluate(model, val_set, device=device)},
    )
    policy = "overwrite" if overwrite else "beside"
    weights = save_checkpoint(model.cpu(), card, out, if_exists=policy) if out is not None else None
    return model.cpu().eval(), card, weights
