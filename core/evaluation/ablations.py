"""What each part of interference_aware contributes: paired per-cell UIS differences between it
and its variants (`core.unlearning.ablations`), and between baselines with and without the
calibrated target, with 95% bootstrap intervals (`core.evaluation.stats`).

Ours runs TGP in partial mode and IGO in full mode; the parts are read on the variant with both
in every mode (`interference_aware_both`), against that variant less one part. In full mode
`interference_aware_no_tgp` is ours, in partial mode `interference_aware_no_igo` is.

For a pair (a, b) the difference is UIS_a - UIS_b per cell (lower UIS is better, so a negative
difference means a scores lower than b), averaged over the cells both have, with its interval
from a bootstrap over cells resampled within each (ratio, setting). The reading says "a lower",
"a higher" or "undecided" from the interval alone: "undecided" whenever it holds 0.
"""

from __future__ import annotations

import math

import pandas as pd

from core.evaluation.stats import bootstrap_mean

OURS = "interference_aware"
BOTH = "interference_aware_both"
CONTRASTS = (
    ("TGP and IGO by mode (ours) against both in every mode", OURS, BOTH),
    ("TGP", BOTH, "interference_aware_no_tgp"),
    ("IGO", BOTH, "interference_aware_no_igo"),
    ("calibrated target", BOTH, "interference_aware_fixed"),
    ("calibrated target on neggrad_plus", "neggrad_plus_calibrated", "neggrad_plus"),
    ("calibrated target on gpm", "gpm_calibrated", "gpm"),
    ("ours against neggrad_plus with the target", OURS, "neggrad_plus_calibrated"),
    ("ours against gpm with the target", OURS, "gpm_calibrated"),
)
"""(part, a, b): the part's contribution is read as UIS_a - UIS_b."""

ABLATION_COLUMNS = ["benchmark", "mode", "part", "a", "b", "cells", "a_uis", "b_uis", "difference",
                    "low", "high", "reading"]


def reading(low: float, high: float) -> str:
    """"a lower" when the interval of UIS_a - UIS_b lies below 0, "a higher" above, else
    "undecided"."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "undecided"
    return "a lower" if high < 0 else "a higher" if low > 0 else "undecided"


def ablation_table(leaderboard: pd.DataFrame, contrasts=CONTRASTS, seed: int = 0) -> pd.DataFrame:
    """One row per (benchmark, mode) and contrast whose two methods both ran (`ABLATION_COLUMNS`).

    Args:
        leaderboard: one row per cell and model, columns benchmark, mode, ratio, setting, seed,
            model, uis.
        contrasts: (part, a, b) triples; difference = mean over shared cells of UIS_a - UIS_b.
    Returns:
        cells (shared by both), a_uis and b_uis (their means there), difference with its 95%
        interval (low, high) and the `reading`.
    """
    rows = []
    cell = [c for c in ("ratio", "setting", "seed") if c in leaderboard]
    for (benchmark, mode), group in leaderboard.groupby(["benchmark", "mode"], sort=False):
        table = group.pivot_table(index=cell, columns="model", values="uis", aggfunc="first")
        for part, a, b in contrasts:
            if a not in table or b not in table:
                continue
            pair = table[[a, b]].dropna()
            strata = (list(zip(*(pair.index.get_level_values(k) for k in ("ratio", "setting"))))
                      if {"ratio", "setting"} <= set(pair.index.names) else None)
            difference, low, high = bootstrap_mean((pair[a] - pair[b]).to_numpy(), seed=seed, strata=strata)
            rows.append({"benchmark": benchmark, "mode": mode, "part": part, "a": a, "b": b,
                         "cells": len(pair), "a_uis": float(pair[a].mean()), "b_uis": float(pair[b].mean()),
                         "difference": difference, "low": low, "high": high, "reading": reading(low, high)})
    return pd.DataFrame(rows, columns=ABLATION_COLUMNS)


def ablation_markdown(table: pd.DataFrame) -> str:
    """The ablation table as Markdown, with how to read it."""
    from core.evaluation.report import frame_table

    return ("difference = mean over cells of UIS(a) - UIS(b), with its 95% bootstrap interval "
            "[low, high] (cells resampled within each ratio and setting); negative: a scores lower "
            "(better) than b. The reading is taken from the interval: undecided while it holds 0.\n\n"
            + frame_table(table))
