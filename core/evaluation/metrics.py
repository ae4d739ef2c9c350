"""Split-level metrics of several models on one forget request, as one tidy DataFrame.

Splits: "forget" (forget instances, target tasks), "kept" (forget instances, kept tasks; partial
mode only), "retain" (a fixed sample of retain instances, all tasks), "test" (the held-out
reference split, all tasks). Every UIS / ILI / TLI / oracle-gap number is read from this frame.

The held-out reference is a part of the val split (`core.data.split_val`), chosen by `heldout`:
"test" for the report (the default), "tuning" for tuning trials and every default choice (never
the test part), "calibration" for the ids the methods see. It is read through
`UnlearningData.held_out`, so a method's copy of the data cannot be scored on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from core.requests import ForgetRequest
from core.training import evaluate

COLUMNS = ("model", "split", "task", "metric", "value")


def fixed_retain_sample(request: ForgetRequest, size: int = 64, seed: int = 0) -> list[int]:
    """A deterministic sample of `size` retain ids (all of them when there are fewer), sorted.

    Depends only on the request's retain ids, `size` and `seed`, so every model of a comparison
    (and every method of a benchmark) is scored on the same instances.
    """
    ids = list(request.retain_ids)
    if size >= len(ids):
        return sorted(ids)
    picks = np.random.default_rng(seed).choice(len(ids), size=size, replace=False)
    return sorted(ids[i] for i in picks)


def _split_ids(request: ForgetRequest, data, retain_sample: int, seed: int, heldout: str = "test"
               ) -> dict[str, tuple[object, list[int], Sequence[str]]]:
    """{split: (dataset, ids, tasks scored)}; "kept" only in partial mode."""
    splits: dict[str, tuple[object, list[int], Sequence[str]]] = {
        "forget": (data.train, list(request.instances), request.tasks)}
    if request.kept_tasks:
        splits["kept"] = (data.train, list(request.instances), request.kept_tasks)
    splits["retain"] = (data.train, fixed_retain_sample(request, retain_sample, seed),
                        request.all_tasks)
    splits["test"] = (*data.held_out(heldout), request.all_tasks)
    return splits


def evaluate_request(models: Mapping[str, torch.nn.Module], request: ForgetRequest, data,
                     retain_sample: int = 64, seed: int = 0, heldout: str = "test") -> pd.DataFrame:
    """Score every model on every split of `request`.

    Args:
        models: {name: model}, e.g. {"original": ..., "grad_ascent": ..., "retrain": ...}.
        request: the forget request.
        data: an `UnlearningData` (train and val datasets).
        retain_sample: size of the fixed retain sample (`fixed_retain_sample`).
        seed: seed of the retain sample.
        heldout: the part of the val split scored as the "test" split: "test" (report),
            "tuning" (tuning trials) or "calibration".
    Returns:
        Tidy DataFrame, columns model, split, task, metric, value; one row per metric of each
        scored task. Each split is evaluated once per model (forget and kept share instances).
    """
    rows = []
    for name, model in models.items():
        cache: dict[tuple[int, tuple[int, ...]], dict[str, dict[str, float]]] = {}
        for split, (dataset, ids, tasks) in _split_ids(request, data, retain_sample, seed, heldout).items():
            key = (id(dataset), tuple(ids))
            if key not in cache:
                cache[key] = evaluate(model, dataset, ids)
            for task in tasks:
                rows += [(name, split, task, metric, float(value))
                         for metric, value in cache[key][task].items()]
    return pd.DataFrame(rows, columns=list(COLUMNS))
