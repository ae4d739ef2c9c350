"""What each part of interference_aware contributes: paired per-cell UIS differences between it
and its variants (`core.unlearning.ablations`), and between baselines with and without the
calibrated target, with 95% bootstrap intervals (`core.evaluation.stats`).

Each variant is ours with one part changed (`core.unlearning.ablations`), so ours against the
variant reads what that part contributes.

For a pair (a, b) the difference is UIS_a - UIS_b per cell on UIS v2 (`SCORE`; lower is better,
so a negative difference means a scores lower than b), averaged over the cells both have, with
its studentized interval from a bootstrap over forget sets (`cluster_ratio` over `cluster_keys`:
every setting of a forget set, or every cell of a base model, resampled together). The reading
says "a lower", "a higher" or "undecided" from the interval alone: "undecided" whenever it holds
0.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from core.evaluation.stats import BASE_SEED, cluster_keys, cluster_ratio
from core.evaluation.tuning import SCORE

OURS = "interference_aware"
CONTRASTS = (
    ("TGP", OURS, "interference_aware_no_tgp"),
    ("IGO", OURS, "interference_aware_no_igo"),
    ("calibrated target", OURS, "interference_aware_fixed"),
    ("a separate repair step", OURS, "interference_aware_joint"),
    ("the kept-task output basis", OURS, "interference_aware_every"),
    ("IGO against the kept pairs", OURS, "interference_aware_retain_igo"),
    ("the target in metric space", OURS, "interference_aware_loss_stop"),
    ("both parts in every mode against TGP and IGO by mode", OURS, "interference_aware_by_mode"),
    ("ours against its first version", OURS, "interference_aware_v1"),
    ("calibrated target on neggrad_plus", "neggrad_plus_calibrated", "neggrad_plus"),
    ("calibrated target on gpm", "gpm_calibrated", "gpm"),
    ("ours against neggrad_plus with the target", OURS, "neggrad_plus_calibrated"),
    ("ours against gpm with the target", OURS, "gpm_calibrated"),
)
"""(part, a, b): the part's contribution is read as UIS_a - UIS_b."""

TWINS = (("full", OURS, "interference_aware_retain_igo"),
         ("full", "interference_aware_by_mode", "interference_aware_no_tgp"),
         ("partial", "interference_aware_by_mode", "interference_aware_no_igo"))
"""(mode, a, b): two registered methods that run the same code with the same search space in
that mode (a full-task request has no kept pairs; v1's placement is, in each mode, ours less the
other part); when both have studies of their own, those differ only in the sampler's seed, so
the gap between their best tuning scores is tuning luck (`twin_gaps`)."""

ABLATION_COLUMNS = ["benchmark", "mode", "part", "a", "b", "cells", "a_uis", "b_uis", "difference",
                    "low", "high", "reading"]


def reading(low: float, high: float) -> str:
    """"a lower" when the interval of UIS_a - UIS_b lies below 0, "a higher" above, else
    "undecided"."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undecided"
    return "a lower" if high < 0 else "a higher" if low > 0 else "undecided"


def ablation_table(leaderboard: pd.DataFrame, contrasts=CONTRASTS, seed: int = 0,
                   metric: str = SCORE) -> pd.DataFrame:
    """One row per (benchmark, mode) and contrast whose two methods both ran (`ABLATION_COLUMNS`).

    Args:
        leaderboard: one row per cell and model, columns benchmark, mode, ratio, setting, seed
            (base_seed where the plan varies it), model and `metric`.
        contrasts: (part, a, b) triples; difference = mean over shared cells of UIS_a - UIS_b.
    Returns:
        cells (shared by both), a_uis and b_uis (their means there), difference with its 95%
        interval (low, high) and the `reading`.
    """
    rows = []
    cell = [c for c in ("ratio", "setting", "seed", BASE_SEED) if c in leaderboard]
    for (benchmark, mode), group in leaderboard.groupby(["benchmark", "mode"], sort=False):
        table = group.pivot_table(index=cell, columns="model", values=metric, aggfunc="first")
        for part, a, b in contrasts:
            if a not in table or b not in table:
                continue
            pair = table[[a, b]].dropna()
            differences = (pair[a] - pair[b]).to_numpy()
            difference, low, high = cluster_ratio(differences, np.ones_like(differences),
                                                  *cluster_keys(pair.index.to_frame(index=False)), seed=seed)
            rows.append({"benchmark": benchmark, "mode": mode, "part": part, "a": a, "b": b,
                         "cells": len(pair), "a_uis": float(pair[a].mean()), "b_uis": float(pair[b].mean()),
                         "difference": difference, "low": low, "high": high, "reading": reading(low, high)})
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def ablation_markdown(table: pd.DataFrame) -> str:
    """The ablation table as Markdown, with how to read it."""
    from core.evaluation.report import frame_table

    return ("difference = mean over cells of UIS v2(a) - UIS v2(b), with its 95% studentized bootstrap "
            "interval [low, high] (forget sets, or base models, resampled with all their cells); "
            "negative: a scores lower "
            "(better) than b. The reading is taken from the interval: undecided while it holds 0.\n\n"
            + frame_table(table))


TWIN_COLUMNS = ["benchmark", "mode", "a", "b", "a_best", "b_best", "gap", "gap_pct"]


def twin_gaps(tuning: pd.DataFrame, twins=TWINS) -> pd.DataFrame:
    """Per benchmark and twin pair (`TWINS`) of a `tuning_table`: both studies' best tuning
    scores and their gap (absolute, and percent of the lower): what the same method tuned twice
    with the same budget can differ by."""
    rows = []
    for benchmark, group in tuning.groupby("benchmark", sort=False):
        best = group.set_index(["mode", "method"])["best_uis"]
        for mode, a, b in twins:
            if (mode, a) in best.index and (mode, b) in best.index:
                one, two = float(best[(mode, a)]), float(best[(mode, b)])
                low = min(one, two)
                gap = abs(one - two)
                rows.append({"benchmark": benchmark, "mode": mode, "a": a, "b": b, "a_best": one,
                             "b_best": two, "gap": gap, "gap_pct": 100 * gap / low if low else math.nan})
    return pd.DataFrame(rows, columns=TWIN_COLUMNS)
