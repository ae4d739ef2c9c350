"""Score several models on one forget request: the leaderboard of a benchmark cell or of the
dashboard's Compare page, both built by `compare_methods` (run the methods, then score them with
the original and the reference models).

One call evaluates every model once (`evaluate_request`), then reads UIS and its breakdown, the
forget gap, ILI, TLI and (optionally) the membership-inference attacks from that frame. When the
retrain oracle is among the models, every model is also measured against it: the gap to the
oracle per split and task, and the oracle-referenced UIS (`core.evaluation.uis.oracle_terms`).
The held-out reference split is the val split's test part for a report and its tuning part for
tuning (`heldout`), never both.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.evaluation.metrics import evaluate_request
from core.evaluation.mia import attack_features, membership_inference
from core.evaluation.uis import ili, oracle_gap, tli, uis2_breakdown, uis_breakdown, uis_oracle
from core.unlearning.runner import run_request

Runner = Callable[[str, Mapping[str, Any]], tuple[torch.nn.Module, float]]
"""run(method, config) -> (unlearned model, seconds): how `compare_methods` gets a method's result."""

LEADERBOARD_COLUMNS = ["model", "uis2", "uis", "forget_gap", "ili", "tli", "uis_oracle", "oracle_gap",
                       "mia_auc", "mia_auc_low", "mia_auc_high", "mia_efficacy", "mia_ref_auc",
                       "mia_ref_auc_low", "mia_ref_auc_high", "seconds"]
ORACLE_COLUMNS = ["model", "split", "task", "metric", "unlearned", "oracle", "gap"]
_FRAMES = ("leaderboard", "breakdown", "scores", "oracle")
_NO_ATTACK = {"forget_auc": math.nan, "forget_auc_low": math.nan, "forget_auc_high": math.nan,
              "mia_efficacy": math.nan, "ref_auc": math.nan, "ref_auc_low": math.nan,
              "ref_auc_high": math.nan}


@dataclass
class Comparison:
    """What `compare_models` returns; every frame is plain data (JSON round trip with
    `to_dict` / `from_dict`).

    leaderboard: one row per model, `LEADERBOARD_COLUMNS`: uis2, UIS v2 in percent
        (`core.evaluation.uis.uis2`: referenced to the oracle when it is among the models, else
        to the original); UIS (protocol 3's), forget gap, ILI, TLI in percent
        (lower is better); uis_oracle, the oracle-referenced UIS in percent, and oracle_gap,
        100 x the mean over splits and tasks of |primary metric - the oracle's| (both NaN
        without an oracle among the models); mia_auc the forget-vs-held-out AUC of the
        population attack with its 95% interval (mia_auc_low / _high), mia_efficacy its share of
        forget instances called non-members; mia_ref_auc (with its interval) the AUC of the
        reference attack calibrated by the oracle's losses (NaN without an oracle); seconds of
        unlearning, NaN if unknown.
    breakdown: `uis_terms` rows of every model, with a "model" column first, and beside them
        the same task's UIS v2 terms (`uis2_terms`: v2_forget, v2_kept, v2_test, v2_retain,
        uis2_t and the parts that stack to it) and their "reference" (oracle or original).
    scores: the tidy `evaluate_request` frame (model, split, task, metric, value) plus "primary"
        (whether the metric is the task's primary one).
    oracle: per model, split and task, the primary metric of the model and of the oracle and
        their absolute gap (`ORACLE_COLUMNS`); empty without an oracle among the models.
    """

    leaderboard: pd.DataFrame
    breakdown: pd.DataFrame
    scores: pd.DataFrame
    oracle: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=ORACLE_COLUMNS))

    def to_dict(self) -> dict[str, list[dict]]:
        return {name: _records(getattr(self, name)) for name in _FRAMES}

    @classmethod
    def from_dict(cls, data: Mapping[str, list[dict]]) -> Comparison:
        frames = {name: _frame(data[name]) for name in _FRAMES if name in data}
        frames["leaderboard"] = frames["leaderboard"].reindex(columns=LEADERBOARD_COLUMNS)
        if "oracle" in frames:
            frames["oracle"] = frames["oracle"].reindex(columns=ORACLE_COLUMNS)
        return cls(**frames)


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
                   retain_sample: int = 64, seed: int = 0, mia: bool = True, heldout: str = "test",
                   oracle: str = "retrain") -> Comparison:
    """Score `models` (which must include `reference`, the model before unlearning) on `request`.

    Args:
        models: {name: model}; the reference scores its own UIS (what doing nothing costs).
        request: the `ForgetRequest`; data: its `UnlearningData`, built from the full val split.
        seconds: {name: unlearning wall time}; missing names get NaN.
        retain_sample, seed: the fixed retain sample shared by ILI and the attack.
        mia: run the membership-inference attacks (the slow part; off for tuning).
        heldout: the part of the val split that plays "test" (UIS reference, attack
            non-members): "test" for a report, "tuning" for tuning trials and default choices.
        oracle: the name of the retrain oracle among `models`, if it is there: the reference of
            uis_oracle, oracle_gap, the `oracle` frame and the reference attack.
    """
    if reference not in models:
        raise ValueError(f"the models to compare must include the reference {reference!r}; "
                         f"got {', '.join(models)}")
    tasks = dict(data.train.tasks)
    scores = evaluate_request(models, request, data, retain_sample, seed, heldout)
    scores["primary"] = [metric == tasks[task].primary
                         for task, metric in zip(scores["task"], scores["metric"])]
    has_oracle = oracle in models
    oracle_features = (attack_features(models[oracle], data, request, retain_sample, seed, heldout)
                       if mia and has_oracle else None)
    rows, parts, gaps = [], [], []
    for name, model in models.items():
        terms = uis_breakdown(scores, name, tasks, request, reference)
        terms2 = uis2_breakdown(scores, name, tasks, request, reference, oracle)
        parts.append(terms.merge(terms2.drop(columns="role"), on="task").assign(model=name))
        attack = (membership_inference(model, data, request, retain_sample, seed, heldout, oracle_features)
                  if mia else _NO_ATTACK)
        forget_gap = terms.loc[terms["role"] == "target", "forget_gap"]
        gap = (oracle_gap(scores[scores["primary"]], name, oracle).assign(model=name) if has_oracle
               else pd.DataFrame(columns=ORACLE_COLUMNS))
        gaps.append(gap)
        uis2_t = terms2["uis2_t"].dropna()
        rows.append({"model": name, "uis2": 100 * float(uis2_t.mean()) if len(uis2_t) else math.nan,
                     "uis": 100 * float(terms["uis_t"].mean()),
                     "forget_gap": 100 * float(forget_gap.mean()),
                     "ili": ili(scores, name, tasks, reference),
                     "tli": tli(scores, name, tasks, request, reference),
                     "uis_oracle": (uis_oracle(scores, name, tasks, request, oracle) if has_oracle
                                    else math.nan),
                     "oracle_gap": 100 * float(gap["gap"].mean()) if has_oracle else math.nan,
                     "mia_auc": attack["forget_auc"], "mia_auc_low": attack["forget_auc_low"],
                     "mia_auc_high": attack["forget_auc_high"], "mia_efficacy": attack["mia_efficacy"],
                     "mia_ref_auc": attack["ref_auc"], "mia_ref_auc_low": attack["ref_auc_low"],
                     "mia_ref_auc_high": attack["ref_auc_high"],
                     "seconds": float((seconds or {}).get(name, np.nan))})
    breakdown = pd.concat(parts, ignore_index=True)
    breakdown = breakdown[["model"] + [c for c in breakdown.columns if c != "model"]]
    gaps = [g for g in gaps if len(g)]
    return Comparison(leaderboard=pd.DataFrame(rows, columns=LEADERBOARD_COLUMNS), breakdown=breakdown,
                      scores=scores, oracle=(pd.concat(gaps, ignore_index=True)[ORACLE_COLUMNS] if gaps
                                             else pd.DataFrame(columns=ORACLE_COLUMNS)))


def run_here(original: torch.nn.Module, request, data) -> Runner:
    """The runner of `compare_methods` that runs a method in this process (the original is not
    modified): what a benchmark cell does, through the one run path, `run_request`, with no
    ledger and no output, so nothing is recorded or written, and without its before/after
    rows."""
    def run(method: str, config: Mapping[str, Any]) -> tuple[torch.nn.Module, float]:
        result, _, _ = run_request(original, None, None, request.instances, request.tasks, method, config,
                                   out=None, ledger=None, data=data, summarised=False)
        return result.model, result.seconds
    return run


def compare_methods(original: torch.nn.Module, request, data, methods: Mapping[str, Mapping[str, Any]],
                    references: Mapping[str, tuple[torch.nn.Module, float]] | None = None,
                    run: Runner | None = None, retain_sample: int = 64, seed: int = 0, mia: bool = True,
                    heldout: str = "test") -> Comparison:
    """Run several methods on one request and compare them: the one path of a benchmark cell and
    of the dashboard's Compare page.

    Args:
        original: the model before unlearning ("original" in the comparison: doing nothing, 0 s).
        request, data: the `ForgetRequest` and its `UnlearningData`.
        methods: {method: config}, run in that order by `run`.
        references: {name: (model, seconds)} scored beside them, before the methods: the retrain
            oracle under "retrain" (the reference of the oracle scores, `compare_models`), a
            second oracle, ...
        run: run(method, config) -> (model, seconds); default `run_here` (the method runs in this
            process, as a benchmark cell does). The Compare page's runs went through the
            dashboard's worker (`core.unlearning.runner.run_request`, recorded in the ledger);
            its `run` reads the models they saved.
        retain_sample, seed, mia, heldout: `compare_models`'s.

    Returns the `Comparison` of "original", the references and the methods, in that order.
    """
    run = run or run_here(original, request, data)
    models, seconds = {"original": original}, {"original": 0.0}
    for name, (model, took) in (references or {}).items():
        models[name], seconds[name] = model, took
    for method, config in methods.items():
        models[method], seconds[method] = run(method, config)
    return compare_models(models, request, data, seconds, retain_sample=retain_sample, seed=seed, mia=mia,
                          heldout=heldout)
