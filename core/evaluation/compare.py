"""Score several models on one forget request: the leaderboard of a benchmark cell or of the
dashboard's Compare page.

One call evaluates every model once (`evaluate_request`), then reads UIS and its breakdown, the
forget gap, ILI, TLI and (optionally) the membership-inference attack from that frame.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from core.evaluation.metrics import evaluate_request
from core.evaluation.mia import membership_inference
from core.evaluation.uis import ili, tli, uis_breakdown

LEADERBOARD_COLUMNS = ["model", "uis", "forget_gap", "ili", "tli", "mia_auc", "mia_efficacy", "seconds"]


@dataclass
class Comparison:
    """What `compare_models` returns; every frame is plain data (JSON round trip with
    `to_dict` / `from_dict`).

    leaderboard: one row per model, `LEADERBOARD_COLUMNS` (UIS, forget gap, ILI, TLI in percent,
        lower is better; mia_auc the forget-vs-test AUC; seconds of unlearning, NaN if unknown).
    breakdown: `uis_terms` rows of every model, with a "model" column first.
    scores: the tidy `evaluate_request` frame (model, split, task, metric, value) plus "primary"
        (whether the metric is the task's primary one).
    """

    leaderboard: pd.DataFrame
    breakdown: pd.DataFrame
    scores: pd.DataFrame

    def to_dict(self) -> dict[str, list[dict]]:
        return {name: _records(getattr(self, name)) for name in ("leaderboard", "breakdown", "scores")}

    @classmethod
    def from_dict(cls, data: Mapping[str, list[dict]]) -> Comparison:
        return cls(**{name: _frame(data[name]) for name in ("leaderboard", "breakdown", "scores")})


def _frame(records: list[dict]) -> pd.DataFrame:
    """The inverse of `_records`: a column whose values are all missing comes back as NaN floats."""
    frame = pd.DataFrame(records)
    for column in frame.columns[frame.isna().all()]:
        frame[column] = np.nan
    return frame


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with NaN as None, so the JSON is strict."""
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]


def compare_models(models: Mapping[str, torch.nn.Module], request, data,
                   seconds: Mapping[str, float] | None = None, reference: str = "original",
                   retain_sample: int = 64, seed: int = 0, mia: bool = True) -> Comparison:
    """Score `models` (which must include `reference`, the model before unlearning) on `request`.

    Args:
        models: {name: model}; the reference scores its own UIS (what doing nothing costs).
        request: the `ForgetRequest`; data: its `UnlearningData`.
        seconds: {name: unlearning wall time}; missing names get NaN.
        retain_sample, seed: the fixed retain sample shared by ILI and the attack.
        mia: run the membership-inference attack (the slow part; off for tuning).
    """
    if reference not in models:
        raise ValueError(f"the models to compare must include the reference {reference!r}; "
                         f"got {', '.join(models)}")
    tasks = dict(data.train.tasks)
    scores = evaluate_request(models, request, data, retain_sample, seed)
    scores["primary"] = [metric == tasks[task].primary
                         for task, metric in zip(scores["task"], scores["metric"])]
    rows, parts = [], []
    for name, model in models.items():
        terms = uis_breakdown(scores, name, tasks, request, reference)
        parts.append(terms.assign(model=name))
        attack = (membership_inference(model, data, request, retain_sample, seed) if mia
                  else {"forget_auc": math.nan, "mia_efficacy": math.nan})
        forget_gap = terms.loc[terms["role"] == "target", "forget_gap"]
        rows.append({"model": name, "uis": 100 * float(terms["uis_t"].mean()),
                     "forget_gap": 100 * float(forget_gap.mean()),
                     "ili": ili(scores, name, tasks, reference),
                     "tli": tli(scores, name, tasks, request, reference),
                     "mia_auc": attack["forget_auc"], "mia_efficacy": attack["mia_efficacy"],
                     "seconds": float((seconds or {}).get(name, np.nan))})
    breakdown = pd.concat(parts, ignore_index=True)
    breakdown = breakdown[["model"] + [c for c in breakdown.columns if c != "model"]]
    return Comparison(leaderboard=pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS),
                      breakdown=breakdown, scores=scores)
