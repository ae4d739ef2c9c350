"""Uncertainty of benchmark figures: bootstrap intervals, paired comparisons, verdicts.

Pure functions of arrays and DataFrames (no model). Every interval is a 95% bootstrap interval
with a fixed seed, so the same cells give the same interval. A reduction is the reduction of the
means, 100 x (mean UIS_baseline - mean UIS_ours) / mean UIS_baseline (positive = ours lower, i.e.
better), never a mean of per-cell ratios.

Benchmark cells are not independent: every setting (full, partial:<task>...) of one (ratio, seed)
forgets the same forget set. `cluster_ratio` resamples those forget sets, each with all its
cells, within each ratio (`cluster_keys`), and reads a studentized interval.

Verdicts (docs/ARCHITECTURE.md section 13.4) read the interval, never the point estimate alone:
  a floor target (reduction >= target): "met" when the lower end >= target, "missed" when the
  upper end < target, else "undecided";
  a ceiling target (|AUC ours - AUC oracle| <= 0.05): "met" when the upper end <= target,
  "missed" when the lower end > target, else "undecided";
  against the strongest baseline and the paper (`reduction_verdicts`): "yes", "no" or
  "undecided".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

LEVEL = 0.95
DRAWS = 10_000
UIS_TARGETS = {"full": 35.0, "partial": 55.0}
"""Targets of the UIS reduction against the strongest baseline, in percent, per mode."""
MIA_TOLERANCE = 0.05
"""Target of |forget AUC of ours - that of the retrain oracle|."""
TIE = 0.01
"""Two UIS values closer than this (UIS points) are a tie."""
PAPER_REDUCTIONS = {"full": 30.3, "partial": 52.9}
"""The paper's UIS reductions against the strongest baseline, in percent, per mode."""
BASE_SEED = "base_seed"
"""Leaderboard column of the base model's training seed, where a plan varies it."""


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


def _row_quantiles(values: np.ndarray, probs: Sequence[float]) -> np.ndarray:
    """(B, len(probs)) inverted-CDF quantiles of each row of `values` (B, D), NaN left out and
    infinities kept (a bound at an infinity stays infinite); NaN for a row without a number."""
    ordered = np.sort(values, axis=1)
    counts = (~np.isnan(ordered)).sum(axis=1)
    picks = np.ceil(np.outer(counts, probs)).astype(np.int64) - 1
    out = np.take_along_axis(ordered, np.clip(picks, 0, values.shape[1] - 1), axis=1)
    return np.where(counts[:, None] > 0, out, math.nan)


def _cluster_weights(strata: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """(draws, C) how often each of C clusters is picked per draw: the n_h clusters of each
    stratum h (labels `strata`, (C,)) drawn n_h times with replacement."""
    rng = np.random.default_rng(seed)
    weights = np.empty((draws, len(strata)))
    for label in np.unique(strata):
        members = np.flatnonzero(strata == label)
        weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)),
                                              size=draws)
    return weights


def _labels(labels: Sequence | None, n: int) -> np.ndarray:
    """(n,) integer codes of `labels` (any hashables, tuples included); all 0 when None."""
    if labels is None:
        return np.zeros(n, dtype=np.int64)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} cells")
    return pd.factorize(pd.Series(list(labels), dtype=object))[0]


def _linearized_variance(y: np.ndarray, x: np.ndarray, theta: np.ndarray, weights: np.ndarray,
                         strata: np.ndarray) -> np.ndarray:
    """Variance of theta = sum(y) / sum(x) over C clusters, by linearisation, summed over strata:
    sum_h (n_h / C)^2 s_h^2 / n_h with s_h^2 the sample variance over stratum h's (weighted)
    clusters of z_c = (y_c - theta x_c) / mean(x). y, x: (B, C) cluster totals; theta: (B, D);
    weights: (D, C) picks per draw. Returns (B, D); strata with one cluster add nothing."""
    total = weights.sum(axis=1)
    x_mean = (x @ weights.T) / total
    variance = np.zeros_like(theta)
    for label in np.unique(strata):
        members = strata == label
        n = int(members.sum())
        if n < 2:
            continue
        w = weights[:, members].T / n
        yh, xh = y[:, members], x[:, members]
        first = (yh @ w - theta * (xh @ w)) / x_mean
        squares = ((yh ** 2) @ w, theta ** 2 * ((xh ** 2) @ w))
        second = (squares[0] - 2 * theta * ((yh * xh) @ w) + squares[1]) / x_mean ** 2
        spread = second - first ** 2
        rounding = 1e-10 * (squares[0] + squares[1]) / x_mean ** 2  # cancellation, not spread
        spread = np.where(spread > rounding, spread, 0) * n / (n - 1)
        variance += (n / total) ** 2 * spread / n
    return variance


def cluster_ratio(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray,
                  clusters: Sequence | None = None, strata: Sequence | None = None, draws: int = DRAWS,
                  seed: int = 0, level: float = LEVEL, studentized: bool = True):
    """theta = sum(numerator) / sum(denominator) over N cells, and its interval from a bootstrap
    that resamples clusters of cells, never a cell apart from its cluster.

    The unit of resampling is the cluster: cells that share a random draw (the settings of one
    forget set) are correlated, and resampling them one by one treats them as independent, which
    narrows the interval. Within each stratum (e.g. the forget ratio, fixed by the plan) its n_h
    clusters are drawn n_h times with replacement. The interval is the studentized (bootstrap-t)
    one: t* = (theta* - theta) / se* over the draws, se the linearised standard error of the
    ratio (`_linearized_variance`), interval [theta - t*_hi se, theta - t*_lo se]; it holds its
    coverage with five clusters per stratum, where the percentile interval (`studentized=False`)
    under-covers (benchmarks/DECISIONS.md section 7).

    Args:
        numerator, denominator: (N,) per cell, or (B, N) for B data sets of the same N cells
            (simulations); a cell with a non-finite value in any data set is left out.
        clusters: (N,) label of each cell's cluster; default: every cell is its own cluster.
        strata: (N,) label of each cell's stratum, the same for every cell of a cluster;
            default: one stratum.
        studentized: bootstrap-t (default) or percentile interval.
    Returns:
        (theta, low, high): floats for (N,) input, (B,) arrays for (B, N). The interval is NaN
        when no stratum has two clusters; a bound is NaN when the draws leave it unbounded (a
        draw of identical clusters has se* = 0: t* is infinite).
    """
    y = np.atleast_2d(np.asarray(numerator, np.float64))
    x = np.atleast_2d(np.asarray(denominator, np.float64))
    if y.shape != x.shape or y.ndim != 2:
        raise ValueError(f"numerator and denominator must be two (N,) or (B, N) arrays of the same "
                         f"cells; got shapes {np.shape(numerator)} and {np.shape(denominator)}")
    keep = np.isfinite(y).all(axis=0) & np.isfinite(x).all(axis=0)
    cluster_of = _labels(clusters, keep.size)[keep] if clusters is not None else np.arange(keep.sum())
    stratum_of = _labels(strata, keep.size)[keep]
    cluster_of = pd.factorize(cluster_of)[0]
    count = int(cluster_of.max()) + 1 if len(cluster_of) else 0
    members = np.zeros((len(cluster_of), count))
    members[np.arange(len(cluster_of)), cluster_of] = 1
    cluster_strata = np.zeros(count, dtype=np.int64)
    cluster_strata[cluster_of] = stratum_of
    if (stratum_of != cluster_strata[cluster_of]).any():
        raise ValueError("every cell of a cluster must be in the same stratum (strata group clusters)")
    y, x = y[:, keep] @ members, x[:, keep] @ members
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = y.sum(axis=1) / x.sum(axis=1)
        low = high = np.full_like(theta, math.nan)
        if count and np.bincount(cluster_strata).max() >= 2:
            weights = _cluster_weights(cluster_strata, draws, seed)
            resampled = (y @ weights.T) / (x @ weights.T)
            tail = (1 - level) / 2
            if studentized:
                once = np.ones((1, count))
                se = np.sqrt(_linearized_variance(y, x, theta[:, None], once, cluster_strata))[:, 0]
                se_star = np.sqrt(_linearized_variance(y, x, resampled, weights, cluster_strata))
                shift = resampled - theta[:, None]
                flat = np.abs(shift) <= 1e-12 * np.maximum(np.abs(theta[:, None]), 1)
                t_star = np.where(flat, 0.0, shift / se_star)
                t_low, t_high = _row_quantiles(t_star, [tail, 1 - tail]).T
                exact = se <= 1e-12 * np.maximum(np.abs(theta), 1)
                low = np.where(exact, theta, theta - t_high * se)
                high = np.where(exact, theta, theta - t_low * se)
            else:
                low, high = _row_quantiles(np.where(np.isfinite(resampled), resampled, math.nan),
                                           [tail, 1 - tail]).T
            low, high = (np.where(np.isfinite(bound), bound, math.nan) for bound in (low, high))
    if np.ndim(numerator) == 1:
        return float(theta[0]), float(low[0]), float(high[0])
    return theta, low, high


def bootstrap_reduction(baseline: Sequence[float] | np.ndarray, ours: Sequence[float] | np.ndarray,
                        clusters: Sequence | None = None, strata: Sequence | None = None,
                        draws: int = DRAWS, seed: int = 0, level: float = LEVEL, studentized: bool = True):
    """The reduction of the means, 100 x (mean(baseline) - mean(ours)) / mean(baseline), and its
    interval from a paired bootstrap over clusters of cells (`cluster_ratio` of ours over
    baseline: both models' cells are resampled together).

    Args:
        baseline, ours: (N,) UIS of the same N cells, or (B, N) for B data sets of them.
        clusters, strata: (N,) labels, as in `cluster_ratio` (`cluster_keys` gives the bench's).
    Returns:
        (reduction, low, high) in percent, floats or (B,) arrays as in `cluster_ratio`.
    """
    if np.shape(baseline) != np.shape(ours) or np.ndim(baseline) not in (1, 2):
        raise ValueError(f"baseline and ours must be two (N,) or (B, N) arrays of the same cells; got "
                         f"shapes {np.shape(baseline)} and {np.shape(ours)}")
    ratio, low, high = cluster_ratio(ours, baseline, clusters, strata, draws, seed, level, studentized)
    return 100 * (1 - ratio), 100 * (1 - high), 100 * (1 - low)


def cluster_keys(cells: pd.DataFrame) -> tuple[list | None, list | None]:
    """(clusters, strata) of cells (one row each) for `cluster_ratio`: with a `BASE_SEED` column
    that varies, the base model (every cell of one base model in one cluster, no strata); else
    the forget set, (ratio, seed), within strata of the ratio. A key whose columns are missing
    is None (a "seed" column alone: every seed its own cluster)."""
    if BASE_SEED in cells and cells[BASE_SEED].nunique() > 1:
        return list(cells[BASE_SEED]), None
    columns = [c for c in ("ratio", "seed") if c in cells]
    clusters = list(zip(*(cells[c] for c in columns))) if columns else None
    return clusters, list(cells["ratio"]) if "ratio" in cells else None


def bootstrap_auc(positive: Sequence[float] | np.ndarray, negative: Sequence[float] | np.ndarray,
                  draws: int = 2000, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
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
    from scipy import stats  # scipy.stats' import costs a second or more: on use only

    return float(stats.wilcoxon(diffs, zero_method="wilcox").pvalue)


def reduction_verdicts(low: float, high: float, paper: float) -> dict[str, str]:
    """The three readings of a reduction's interval [low, high] (percent), each "yes", "no" or
    "undecided" (undecided whenever the interval is NaN):
      better_than_baseline: "yes" when low > 0, "no" when high < 0, else undecided;
      consistent_with_paper: "yes" when low <= paper <= high, else "no";
      beyond_paper: "yes" when low >= paper, "no" when high < paper, else undecided.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return dict.fromkeys(("better_than_baseline", "consistent_with_paper", "beyond_paper"), "undecided")
    return {"better_than_baseline": "yes" if low > 0 else "no" if high < 0 else "undecided",
            "consistent_with_paper": "yes" if low <= paper <= high else "no",
            "beyond_paper": "yes" if low >= paper else "no" if high < paper else "undecided"}


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of m p-values (m,): the i-th smallest times (m - i + 1), made
    non-decreasing in that order, at most 1. Reject where the adjusted p-value is below the
    level: the chance of any false rejection stays under it. NaN stays NaN and does not count in m."""
    given = np.asarray(pvalues, np.float64)
    adjusted = np.full(given.shape, math.nan)
    finite = np.flatnonzero(np.isfinite(given))
    order = finite[np.argsort(given[finite], kind="stable")]
    scaled = given[order] * (len(order) - np.arange(len(order)))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


PAIRED_COLUMNS = ["benchmark", "mode", "baseline", "cells", "clusters", "wins", "ties", "losses", "ours_uis",
                  "baseline_uis", "reduction_pct", "reduction_low", "reduction_high", "wilcoxon_p", "holm_p"]


def paired_comparisons(leaderboard: pd.DataFrame, ours: str, baselines: Sequence[str],
                       by: Sequence[str] = ("benchmark", "mode"),
                       cell: Sequence[str] = ("ratio", "setting", "seed"), metric: str = "uis",
                       tie: float = TIE, draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """`ours` against each baseline, per group of `by`, on the cells both have.

    Args:
        leaderboard: one row per cell and model, with the columns of `by`, `cell` (and
            `BASE_SEED` where the plan varies it), "model" and `metric` (lower is better).
        ours: the model compared; baselines: the models it is compared against.
        tie: |difference| at most this is a tie.
    Returns:
        One row per group and baseline (`PAIRED_COLUMNS`): cells, and clusters (`cluster_keys`:
        forget sets); wins (ours lower by more than `tie`), ties, losses, cell by cell; the means
        of both; the reduction of the means, 100 x (mean base - mean ours) / mean base, with its
        cluster bootstrap interval (`bootstrap_reduction`); the Wilcoxon signed-rank p-value of
        base - ours over the clusters' means (the clusters are the independent units), and that
        p-value Holm-adjusted over every row of the table (`holm`).
    """
    rows = []
    for key, group in leaderboard.groupby(list(by), sort=False):
        key = key if isinstance(key, tuple) else (key,)
        index = [c for c in (*cell, BASE_SEED) if c in group]
        values = group.pivot_table(index=index, columns="model", values=metric, aggfunc="first")
        if ours not in values:
            continue
        for baseline in baselines:
            if baseline not in values or baseline == ours:
                continue
            pair = values[[baseline, ours]].dropna()
            cells = pair.index.to_frame(index=False)
            clusters, strata = cluster_keys(cells)
            diff = (pair[baseline] - pair[ours]).to_numpy()
            reduction, low, high = bootstrap_reduction(pair[baseline].to_numpy(), pair[ours].to_numpy(),
                                                       clusters, strata, draws, seed)
            unit_of = np.arange(len(diff)) if clusters is None else _labels(clusters, len(diff))
            units = pd.Series(diff).groupby(unit_of).mean()
            rows.append({**dict(zip(by, key)), "baseline": baseline, "cells": len(pair),
                         "clusters": len(units),
                         "wins": int((diff > tie).sum()), "ties": int((np.abs(diff) <= tie).sum()),
                         "losses": int((diff < -tie).sum()), "ours_uis": pair[ours].mean(),
                         "baseline_uis": pair[baseline].mean(), "reduction_pct": reduction,
                         "reduction_low": low, "reduction_high": high, "wilcoxon_p": wilcoxon_p(units)})
    table = pd.DataFrame(rows, columns=list(by) + PAIRED_COLUMNS[2:-1])
    return table.assign(holm_p=holm(table["wilcoxon_p"].to_numpy(dtype=np.float64)))
