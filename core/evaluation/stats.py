"""Uncertainty of benchmark figures: bootstrap intervals, paired per-cell comparisons, verdicts.

Pure functions of arrays and DataFrames (no model). Every interval is a 95% percentile bootstrap
with a fixed seed, so the same cells give the same interval. A reduction is
100 x (UIS_baseline - UIS_ours) / UIS_baseline (positive = ours lower, i.e. better).

Verdicts (docs/ARCHITECTURE.md section 13.4) read the interval, never the point estimate alone:
  a floor target (reduction >= target): "met" when the lower end >= target, "missed" when the
  upper end < target, else "undecided";
  a ceiling target (|AUC ours - AUC oracle| <= 0.05): "met" when the upper end <= target,
  "missed" when the lower end > target, else "undecided".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
DRAWS = 10_000
UIS_TARGETS = {"full": 35.0, "partial": 55.0}
"""Targets of the UIS reduction against the strongest baseline, in percent, per mode."""
MIA_TOLERANCE = 0.05
"""Target of |forget AUC of ours - that of the retrain oracle|."""
TIE = 0.01
"""Two UIS values closer than this (UIS points) are a tie."""


def _quantiles(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not len(values):
        return math.nan, math.nan
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))


def _stratum_resamples(strata: Sequence, draws: int, seed: int) -> np.ndarray:
    """(draws, N) indices: each stratum's members resampled with replacement within it."""
    labels = pd.factorize(pd.Series(list(strata), dtype=object))[0]
    rng = np.random.default_rng(seed)
    out = np.empty((draws, len(labels)), dtype=np.int64)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        out[:, members] = members[rng.integers(0, len(members), size=(draws, len(members)))]
    return out


def bootstrap_mean(values: Sequence[float] | np.ndarray, draws: int = DRAWS, seed: int = 0,
                   level: float = LEVEL, strata: Sequence | None = None) -> tuple[float, float, float]:
    """(mean, low, high) of `values` (N,), a percentile bootstrap over the values (resampled
    within each label of `strata` when given). NaN values are dropped; when no resample can
    differ from the data (fewer than 2 values, or one value per stratum) the interval is NaN."""
    given = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(given)
    finite: np.ndarray = given[keep]
    if not len(finite):
        return math.nan, math.nan, math.nan
    strata = [0] * len(finite) if strata is None else [s for s, k in zip(strata, keep) if k]
    picks = _stratum_resamples(strata, draws, seed)
    if (picks == np.arange(len(finite))).all():
        return float(finite.mean()), math.nan, math.nan
    return (float(finite.mean()), *_quantiles(finite[picks].mean(axis=1), level))


def bootstrap_reduction(baseline: Sequence[float] | np.ndarray, ours: Sequence[float] | np.ndarray,
                        strata: Sequence | None = None,
                        draws: int = DRAWS, seed: int = 0,
                        level: float = LEVEL) -> tuple[float, float, float]:
    """The reduction of the means, 100 x (mean(baseline) - mean(ours)) / mean(baseline), and its
    interval from a paired bootstrap over cells.

    Args:
        baseline, ours: (N,) UIS of the same N cells.
        strata: (N,) labels (e.g. ratio and setting); cells are resampled within their stratum,
            so every resample keeps the plan's mix of settings. Default: one stratum.
    Returns:
        (reduction, low, high) in percent; NaN interval when every stratum has one cell.
    """
    baseline, ours = np.asarray(baseline, np.float64), np.asarray(ours, np.float64)
    if baseline.shape != ours.shape or baseline.ndim != 1:
        raise ValueError(f"baseline and ours must be two (N,) arrays of the same cells; got shapes "
                         f"{baseline.shape} and {ours.shape}")
    if not len(baseline):
        return math.nan, math.nan, math.nan
    point = 100 * (baseline.mean() - ours.mean()) / baseline.mean()
    strata = [0] * len(baseline) if strata is None else list(strata)
    picks = _stratum_resamples(strata, draws, seed)
    if (picks == np.arange(len(baseline))).all():
        return float(point), math.nan, math.nan
    base, mine = baseline[picks].mean(axis=1), ours[picks].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (float(point), *_quantiles(100 * (base - mine) / base, level))


def bootstrap_auc(positive: Sequence[float], negative: Sequence[float], draws: int = 2000, seed: int = 0,
                  level: float = LEVEL) -> tuple[float, float, float]:
    """ROC AUC of scores `positive` (P,) above `negative` (N,) (ties count 1/2) and its interval,
    both groups resampled with replacement. Vectorised: AUC = w_p^T C w_n with C the (P, N) table
    of pairwise wins and w the resampled weights. NaN when a group is empty."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(pos) or not len(neg):
        return math.nan, math.nan, math.nan
    wins = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    rng = np.random.default_rng(seed)
    w_pos = rng.multinomial(len(pos), np.full(len(pos), 1 / len(pos)), size=draws) / len(pos)
    w_neg = rng.multinomial(len(neg), np.full(len(neg), 1 / len(neg)), size=draws) / len(neg)
    resampled = np.einsum("dp,pn,dn->d", w_pos, wins, w_neg)
    return (float(wins.mean()), *_quantiles(resampled, level))


def abs_interval(low: float, high: float) -> tuple[float, float]:
    """The interval of |x| given an interval [low, high] of x."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return math.nan, math.nan
    if low >= 0:
        return low, high
    if high <= 0:
        return -high, -low
    return 0.0, max(-low, high)


def verdict_at_least(low: float, high: float, target: float) -> str:
    """"met" / "missed" / "undecided" for a target `value >= target`, from the value's interval."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undecided"
    return "met" if low >= target else "missed" if high < target else "undecided"


def verdict_at_most(low: float, high: float, target: float) -> str:
    """"met" / "missed" / "undecided" for a target `value <= target`, from the value's interval."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undecided"
    return "met" if high <= target else "missed" if low > target else "undecided"


def wilcoxon_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the Wilcoxon signed-rank test that paired differences centre on 0;
    NaN with no non-zero difference."""
    diffs = np.asarray(differences, np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if not np.any(diffs != 0):
        return math.nan
    return float(stats.wilcoxon(diffs, zero_method="wilcox").pvalue)


PAIRED_COLUMNS = ["benchmark", "mode", "baseline", "cells", "wins", "ties", "losses", "mean_reduction_pct",
                  "reduction_low", "reduction_high", "wilcoxon_p"]


def paired_comparisons(leaderboard: pd.DataFrame, ours: str, baselines: Sequence[str],
                       by: Sequence[str] = ("benchmark", "mode"),
                       cell: Sequence[str] = ("ratio", "setting", "seed"), metric: str = "uis",
                       tie: float = TIE, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """`ours` against each baseline, cell by cell, per group of `by`.

    Args:
        leaderboard: one row per cell and model, with the columns of `by`, `cell`, "model" and
            `metric` (lower is better).
        ours: the model compared; baselines: the models it is compared against.
        tie: |difference| at most this is a tie.
    Returns:
        One row per group and baseline (`PAIRED_COLUMNS`): the cells where both have a finite
        value; wins (ours lower by more than `tie`), ties, losses; the mean over cells of the
        per-cell reduction 100 x (base - ours) / base with its bootstrap interval over cells; the
        Wilcoxon signed-rank p-value of base - ours.
    """
    rows = []
    for key, group in leaderboard.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        values = group.pivot_table(index=list(cell), columns="model", values=metric, aggfunc="first")
        if ours not in values:
            continue
        for baseline in baselines:
            if baseline not in values or baseline == ours:
                continue
            pair = values[[baseline, ours]].dropna()
            diff = (pair[baseline] - pair[ours]).to_numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                reduction = 100 * diff / pair[baseline].to_numpy()
            mean, low, high = bootstrap_mean(reduction, draws, seed)
            rows.append({**dict(zip(by, key)), "baseline": baseline, "cells": len(pair),
                         "wins": int((diff > tie).sum()), "ties": int((np.abs(diff) <= tie).sum()),
                         "losses": int((diff < -tie).sum()), "mean_reduction_pct": mean,
                         "reduction_low": low, "reduction_high": high, "wilcoxon_p": wilcoxon_p(diff)})
    return pd.DataFrame(rows, columns=list(by) + PAIRED_COLUMNS[2:])
