"""Unlearning scores from the tidy frame of `evaluate_request` (docs/ARCHITECTURE.md section 12.2).

Every score uses each task's primary metric m (higher is better, in [0, 1]):
  test drift  d_t = |m_orig(test) - m_unl(test)| / m_orig(test)            every task
  forget gap  f_t = |m_orig(test) - m_unl(forget)| / m_orig(test)          target tasks
  kept drift  k_t = |m_orig(kept) - m_unl(kept)| / m_orig(kept)            kept tasks (partial)
  UIS_t = (d_t + f_t) / 2 (target) or (d_t + k_t) / 2 (kept);  UIS = 100 x mean_t UIS_t.
A relative change against a reference of 0 (or NaN) is NaN. Lower is better for all of them.
Delta_m% is `core.tasks.delta_m`.

UIS v2 (`uis2_terms`, benchmarks/DECISIONS.md section 10) adds the retain drift (instance-level
interference) and references every term to the retrain oracle when there is one:
  UIS2_t = mean(F_t or K_t, D_t, R_t);  UIS v2 = 100 x mean_t UIS2_t.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from core.tasks import TaskSpec

Scores = Mapping[str, Mapping[str, float]]
"""{split: {task: primary metric value}}."""


def relative_change(reference: float, value: float) -> float:
    """|reference - value| / reference; NaN when the reference is 0 or not finite."""
    if not math.isfinite(reference) or reference == 0:
        return math.nan
    return abs(reference - value) / reference


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def primary_scores(frame: pd.DataFrame, model: str,
                   tasks: Mapping[str, TaskSpec]) -> dict[str, dict[str, float]]:
    """{split: {task: primary metric}} of `model` in an `evaluate_request` frame."""
    rows = frame[frame["model"] == model]
    if rows.empty:
        raise ValueError(f"no model {model!r} in the frame; it has {', '.join(frame['model'].unique())}")
    out: dict[str, dict[str, float]] = {}
    for row in rows.itertuples(index=False):
        if row.task in tasks and row.metric == tasks[row.task].primary:
            out.setdefault(row.split, {})[row.task] = float(row.value)
    return out


def uis_terms(original: Scores, unlearned: Scores, targets: Sequence[str],
              kept: Sequence[str] = ()) -> pd.DataFrame:
    """Per-task UIS terms from primary scores (pure; no model, no frame).

    Args:
        original, unlearned: {split: {task: value}} with splits "test", "forget" (targets) and
            "kept" (kept tasks).
        targets: forgotten tasks; kept: the other tasks (partial mode).
    Returns:
        One row per task (targets then kept): task, role ("target" / "kept"), test_drift (d_t),
        forget_gap (f_t, NaN for kept tasks), kept_drift (k_t, NaN for targets), uis_t; and the
        halves that stack to uis_t: test_half = d_t / 2, forget_half = f_t / 2 (0 for kept
        tasks), kept_half = k_t / 2 (0 for targets). All are fractions, not percent.
    """
    rows = []
    for role, names in (("target", targets), ("kept", kept)):
        for task in names:
            ref = original["test"][task]
            d = relative_change(ref, unlearned["test"][task])
            f = relative_change(ref, unlearned["forget"][task]) if role == "target" else math.nan
            k = (relative_change(original["kept"][task], unlearned["kept"][task])
                 if role == "kept" else math.nan)
            other = f if role == "target" else k
            rows.append({"task": task, "role": role, "test_drift": d, "forget_gap": f,
                         "kept_drift": k, "uis_t": (d + other) / 2, "test_half": d / 2,
                         "forget_half": f / 2 if role == "target" else 0.0,
                         "kept_half": k / 2 if role == "kept" else 0.0})
    return pd.DataFrame(rows, columns=["task", "role", "test_drift", "forget_gap", "kept_drift",
                                       "uis_t", "test_half", "forget_half", "kept_half"])


def oracle_terms(oracle: Scores, unlearned: Scores, targets: Sequence[str],
                 kept: Sequence[str] = ()) -> pd.DataFrame:
    """Per-task terms of the oracle-referenced UIS (pure): the terms of `uis_terms` with the
    retrain oracle's own score on each split as the reference, instead of the original's test
    score:
      test drift  |m_orc(test) - m_unl(test)| / m_orc(test)           every task
      forget gap  |m_orc(F_t) - m_unl(F_t)| / m_orc(F_t)               target tasks
      kept drift  |m_orc(K_t) - m_unl(K_t)| / m_orc(K_t)               kept tasks
      UIS^o_t = (test drift + forget gap or kept drift) / 2;  the oracle scores 0.
    An unlearned model that forgets past the oracle (below the unseen level, or where the oracle
    still fits the images' kept tasks) is penalised here, though the paper's UIS may reward it.

    Args:
        oracle, unlearned: {split: {task: value}} with splits "test", "forget" and "kept".
    Returns:
        One row per task: task, role, test_drift, forget_gap, kept_drift, uis_t (fractions).
    """
    rows = []
    for role, names in (("target", targets), ("kept", kept)):
        split = "forget" if role == "target" else "kept"
        for task in names:
            d = relative_change(oracle["test"][task], unlearned["test"][task])
            other = relative_change(oracle[split][task], unlearned[split][task])
            rows.append({"task": task, "role": role, "test_drift": d,
                         "forget_gap": other if role == "target" else math.nan,
                         "kept_drift": other if role == "kept" else math.nan, "uis_t": (d + other) / 2})
    return pd.DataFrame(rows, columns=["task", "role", "test_drift", "forget_gap", "kept_drift", "uis_t"])


V2_TERMS = ("v2_forget", "v2_kept", "v2_test", "v2_retain")
"""The columns of `uis2_terms` that average to uis2_t (fractions; NaN where a term does not apply)."""


def uis2_terms(reference: Scores, unlearned: Scores, targets: Sequence[str], kept: Sequence[str] = (),
               oracle: bool = True) -> pd.DataFrame:
    """Per-task terms of UIS v2 (pure; benchmarks/DECISIONS.md section 10).

    Args:
        reference: {split: {task: value}} of the retrain oracle (`oracle` True) or of the
            original model (`oracle` False), splits "test", "forget", "kept" (partial mode),
            "retain"; unlearned: the same of the unlearned model.
        targets: forgotten tasks; kept: the other tasks (partial mode).
        oracle: whether `reference` is the retrain oracle. The forget term's reference is the
            oracle on the forget images, or without an oracle the original on the held-out split
            (the unseen level); every other term's is the reference on the same split.
    Returns:
        One row per task (targets, then kept): task, role, v2_forget (F_t, target tasks),
        v2_kept (K_t, kept tasks), v2_test (D_t), v2_retain (R_t), uis2_t = the mean of the
        task's finite terms (NaN when none is); and forget_part, kept_part, test_part,
        retain_part = each term x its share of uis2_t (they stack to uis2_t; 0 when absent).
    """
    rows = []
    for role, names in (("target", targets), ("kept", kept)):
        for task in names:
            split = "forget" if role == "target" else "kept"
            first_ref = reference[split if oracle or role == "kept" else "test"][task]
            first = relative_change(first_ref, unlearned[split][task])
            terms = {"v2_forget": first if role == "target" else math.nan,
                     "v2_kept": first if role == "kept" else math.nan,
                     "v2_test": relative_change(reference["test"][task], unlearned["test"][task]),
                     "v2_retain": relative_change(reference["retain"][task], unlearned["retain"][task])}
            finite = [v for v in terms.values() if math.isfinite(v)]
            share = 1 / len(finite) if finite else math.nan
            rows.append({"task": task, "role": role, **terms,
                         "uis2_t": float(np.mean(finite)) if finite else math.nan,
                         **{name.replace("v2_", "") + "_part": value * share if math.isfinite(value) else 0.0
                            for name, value in terms.items()}})
    return pd.DataFrame(rows, columns=["task", "role", *V2_TERMS, "uis2_t", "forget_part", "kept_part",
                                       "test_part", "retain_part"])


def uis2_breakdown(frame: pd.DataFrame, unlearned: str, tasks: Mapping[str, TaskSpec], request,
                   original: str = "original", oracle: str = "retrain") -> pd.DataFrame:
    """`uis2_terms` of model `unlearned` in an `evaluate_request` frame: referenced to `oracle`
    when the frame has that model, else to `original`; a "reference" column says which."""
    has_oracle = oracle in set(frame["model"])
    reference = oracle if has_oracle else original
    terms = uis2_terms(primary_scores(frame, reference, tasks), primary_scores(frame, unlearned, tasks),
                       request.tasks, request.kept_tasks, oracle=has_oracle)
    return terms.assign(reference=reference)


def uis2(frame: pd.DataFrame, unlearned: str, tasks: Mapping[str, TaskSpec], request,
         original: str = "original", oracle: str = "retrain") -> float:
    """UIS v2 = 100 x mean over tasks of `uis2_breakdown`'s uis2_t (tasks without a finite term
    left out); lower is better, the oracle scores 0."""
    values = uis2_breakdown(frame, unlearned, tasks, request, original, oracle)["uis2_t"].dropna()
    return 100 * float(values.mean()) if len(values) else math.nan


def uis_oracle(frame: pd.DataFrame, unlearned: str, tasks: Mapping[str, TaskSpec], request,
               oracle: str = "retrain") -> float:
    """Oracle-referenced UIS = 100 x mean over tasks of `oracle_terms`' uis_t (tasks whose term is
    undefined, a reference of 0, left out, as in the leaderboard's UIS); lower is better."""
    terms = oracle_terms(primary_scores(frame, oracle, tasks), primary_scores(frame, unlearned, tasks),
                         request.tasks, request.kept_tasks)
    return 100 * float(terms["uis_t"].mean())


def uis_breakdown(frame: pd.DataFrame, unlearned: str, tasks: Mapping[str, TaskSpec], request,
                  original: str = "original") -> pd.DataFrame:
    """`uis_terms` of model `unlearned` against `original` in an `evaluate_request` frame.

    request: the `ForgetRequest` (its `tasks` are the targets, its `kept_tasks` the kept ones).
    """
    return uis_terms(primary_scores(frame, original, tasks), primary_scores(frame, unlearned, tasks),
                     request.tasks, request.kept_tasks)


def uis(frame: pd.DataFrame, unlearned: str, tasks: Mapping[str, TaskSpec], request,
        original: str = "original") -> float:
    """UIS = 100 x mean over tasks of UIS_t; lower is better."""
    return 100 * _mean(list(uis_breakdown(frame, unlearned, tasks, request, original)["uis_t"]))


def instance_interference(original: Mapping[str, float], unlearned: Mapping[str, float]) -> float:
    """ILI = 100 x mean_t |m_orig(R_t) - m_unl(R_t)| / m_orig(R_t) over the tasks of `original`.

    original, unlearned: {task: primary metric on the retain sample}.
    """
    return 100 * _mean([relative_change(original[t], unlearned[t]) for t in original])


def task_interference(original: Scores, unlearned: Scores, targets: Sequence[str],
                      kept: Sequence[str]) -> float:
    """TLI = 100 x mean of the list [k_t for t in kept] + [d_t for t not in targets].

    Both parts run over the non-target tasks, so in partial mode this is the mean of 2 x |kept|
    numbers (kept drift and test drift of each kept task). NaN in full mode, where no task is
    kept or non-target: there is no other task to interfere with.
    """
    others = [t for t in original["test"] if t not in targets]
    values = [relative_change(original["kept"][t], unlearned["kept"][t]) for t in kept]
    values += [relative_change(original["test"][t], unlearned["test"][t]) for t in others]
    return 100 * _mean(values)


def ili(frame: pd.DataFrame, unlearned: str, tasks: Mapping[str, TaskSpec],
        original: str = "original") -> float:
    """`instance_interference` on the "retain" split of an `evaluate_request` frame."""
    return instance_interference(primary_scores(frame, original, tasks)["retain"],
                                 primary_scores(frame, unlearned, tasks)["retain"])


def tli(frame: pd.DataFrame, unlearned: str, tasks: Mapping[str, TaskSpec], request,
        original: str = "original") -> float:
    """`task_interference` of an `evaluate_request` frame; NaN for a full-mode request."""
    return task_interference(primary_scores(frame, original, tasks),
                             primary_scores(frame, unlearned, tasks), request.tasks, request.kept_tasks)


def oracle_gap(frame: pd.DataFrame, unlearned: str, oracle: str = "retrain") -> pd.DataFrame:
    """|m_unl - m_oracle| for every split, task and metric both models were scored on.

    Returns columns split, task, metric, unlearned, oracle, gap (absolute, in metric units).
    """
    keys = ["split", "task", "metric"]
    pick = {name: frame[frame["model"] == name].set_index(keys)["value"] for name in (unlearned, oracle)}
    for name, values in pick.items():
        if values.empty:
            raise ValueError(f"no model {name!r} in the frame; it has {', '.join(frame['model'].unique())}")
    out = pd.concat({"unlearned": pick[unlearned], "oracle": pick[oracle]}, axis=1, join="inner")
    out["gap"] = (out["unlearned"] - out["oracle"]).abs()
    return out.reset_index()
