"""Per-class change of segmentation-like tasks: IoU per class and the confusion matrix, per model
and split of a forget request (issue 21 part 4).

A task takes part when its metric accumulator keeps a confusion matrix (rows = truth, columns =
prediction, over the valid pixels of the whole split; `core.tasks.segmentation`), so any kind
with classes that does (a plugin's too) gets the same tables. Splits are those of
`core.evaluation.metrics`: "forget" (the target tasks), "kept" (partial mode), "retain" (the
fixed retain sample) and "test" (the held-out part chosen by `heldout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.evaluation.metrics import _split_ids
from core.requests import ForgetRequest
from core.training import _to, iterate_batches

Key = tuple[str, str, str]
"""(model, split, task)."""
PER_CLASS_COLUMNS = ["model", "split", "task", "class", "iou", "pixels"]


def confusion_tasks(tasks: Mapping[str, Any]) -> list[str]:
    """The tasks whose accumulator keeps a confusion matrix (segmentation-like)."""
    return [name for name, task in tasks.items() if hasattr(task.accumulator(), "confusion")]


@torch.no_grad()
def class_confusions(models: Mapping[str, torch.nn.Module], request: ForgetRequest, data,
                     retain_sample: int = 64, seed: int = 0, heldout: str = "test",
                     batch_size: int = 64) -> dict[Key, np.ndarray]:
    """{(model, split, task): (C, C) int64 confusion counts} for every confusion task of each split.

    Each split's images are run once per model; the device is the model's own."""
    splits = _split_ids(request, data, retain_sample, seed, heldout)
    found: dict[Key, np.ndarray] = {}
    for name, model in models.items():
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        seen: dict[tuple[int, tuple[int, ...]], dict[str, np.ndarray]] = {}
        for split, (source, ids, tasks) in splits.items():
            dataset: Any = source  # an MTLDataset (train, or the held-out part of val)
            wanted = [t for t in tasks if t in confusion_tasks(dataset.tasks)]
            if not wanted or not ids:
                continue
            key = (id(dataset), tuple(ids))
            if key not in seen:
                accumulators = {t: dataset.tasks[t].accumulator() for t in confusion_tasks(dataset.tasks)}
                for batch in iterate_batches(dataset, ids, batch_size):
                    batch = _to(batch, device)
                    outputs = model(batch["image"])
                    for task, accumulator in accumulators.items():
                        accumulator.update(outputs[task], batch[task])
                seen[key] = {t: a.confusion.numpy().copy() for t, a in accumulators.items()}
            for task in wanted:
                found[(name, split, task)] = seen[key][task]
        model.train(was_training)
    return found


def class_iou(counts: np.ndarray) -> np.ndarray:
    """IoU per class of (C, C) confusion counts: diag / (row + column - diag); NaN for a class
    with an empty union (never present, never predicted)."""
    counts = counts.astype(np.float64)
    diag = np.diag(counts)
    union = counts.sum(1) + counts.sum(0) - diag
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, diag / union, np.nan)


def per_class_table(confusions: Mapping[Key, np.ndarray],
                    class_names: Mapping[str, Sequence[str]] | None = None) -> pd.DataFrame:
    """Long table (`PER_CLASS_COLUMNS`): IoU and true pixels of every class, per model, split
    and task; classes named by `class_names[task]` when given, else "class i"."""
    rows = []
    for (model, split, task), counts in confusions.items():
        names = list((class_names or {}).get(task) or ())
        for index, (iou, pixels) in enumerate(zip(class_iou(counts), counts.sum(1))):
            label = names[index] if index < len(names) else f"class {index}"
            rows.append({"model": model, "split": split, "task": task, "class": label,
                         "iou": float(iou), "pixels": int(pixels)})
    return pd.DataFrame(rows, columns=PER_CLASS_COLUMNS)


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each truth row as shares of its pixels (the prediction matrix); a row with no pixel is 0."""
    counts = counts.astype(np.float64)
    totals = counts.sum(1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)


def confusion_change(confusions: Mapping[Key, np.ndarray], split: str, task: str, after: str,
                     before: str = "original") -> np.ndarray:
    """Row-normalised confusion of `after` minus that of `before` on (split, task): each cell is
    the change in the share of a true class's pixels predicted as each class (rows sum to 0).
    KeyError naming what is missing when either model was not scored there."""
    missing = [m for m in (after, before) if (m, split, task) not in confusions]
    if missing:
        raise KeyError(f"no confusion of {', '.join(missing)} on {split} / {task}; scored: "
                       f"{sorted({k[0] for k in confusions if k[1:] == (split, task)})}")
    return (row_normalised(confusions[(after, split, task)])
            - row_normalised(confusions[(before, split, task)]))
