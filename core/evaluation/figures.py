"""Plotly figures of unlearning results: pure functions, tidy DataFrame in, figure out.

Shared by the benchmark's HTML report and the dashboard (app/charts.py re-exports them), so a
chart looks the same wherever it appears.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

COMPONENTS = {"test_half": "test drift", "forget_half": "forget gap", "kept_half": "kept drift"}
"""Protocol 3's UIS: the halves of `uis_terms`."""
COMPONENTS_V2 = {"forget_part": "forget", "kept_part": "kept drift", "test_part": "test drift",
                 "retain_part": "retain drift"}
"""UIS v2: the parts of `uis2_terms`."""
SPLIT_ORDER = ["forget", "kept", "retain", "test"]
_MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


def _tidy(figure: go.Figure, title: str | None = None) -> go.Figure:
    figure.update_layout(margin=_MARGIN, legend_title_text="", title=title)
    return figure


def uis_bar_figure(summary: pd.DataFrame, title: str | None = None, score: str = "uis") -> go.Figure:
    """Mean score per model with its std as error bars (lower is better).

    Args:
        summary: rows model, <score>_mean, <score>_std (a `summary_table`); optional columns
            benchmark and mode become facet rows and columns.
        score: "uis" (protocol 3's UIS) or "uis2" (UIS v2).
    """
    facets = {k: v for k, v in (("facet_row", "benchmark"), ("facet_col", "mode")) if v in summary}
    label = "UIS v2" if score == "uis2" else "UIS"
    figure = px.bar(summary, x="model", y=f"{score}_mean", error_y=f"{score}_std", color="model", **facets,
                    labels={f"{score}_mean": f"{label} (lower is better)", "model": ""})
    figure.update_layout(showlegend=False)
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return _tidy(figure, title)


def uis_breakdown_figure(breakdown: pd.DataFrame, title: str | None = None) -> go.Figure:
    """UIS v2 per model and task, stacked by component (forget or kept drift, test drift, retain
    drift); protocol 3's UIS (test drift, forget gap, kept drift) for a frame without UIS v2's
    parts.

    Args:
        breakdown: rows model, task and the parts of `uis2_terms` (forget_part, kept_part,
            test_part, retain_part), or the halves of `uis_terms` (test_half, forget_half,
            kept_half); fractions. The stacked bars show 100 x part / number of tasks, so the bars
            of one model summed over the task panels give its score.
    """
    components = COMPONENTS_V2 if set(COMPONENTS_V2) <= set(breakdown) else COMPONENTS
    score = "UIS v2" if components is COMPONENTS_V2 else "UIS"
    tasks = breakdown["task"].nunique() or 1
    long = breakdown.melt(id_vars=["model", "task"], value_vars=list(components),
                          var_name="component", value_name="value")
    long["component"] = long["component"].map(components)
    long["value"] = 100 * long["value"].fillna(0) / tasks
    figure = px.bar(long, x="model", y="value", color="component", facet_col="task",
                    labels={"value": f"share of {score}", "model": ""},
                    category_orders={"component": list(components.values())})
    figure.update_layout(barmode="stack")
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return _tidy(figure, title)


def metric_shift_figure(scores: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Each task's primary metric per split, one bar per model (original vs unlearned vs oracle).

    Args:
        scores: rows model, split, task, value (primary metric only; e.g. the rows of a
            `Comparison.scores` with primary True); an optional "metric" column labels the axis.
    """
    present = [s for s in SPLIT_ORDER if s in set(scores["split"])]
    figure = px.bar(scores, x="split", y="value", color="model", barmode="group", facet_col="task",
                    category_orders={"split": present}, labels={"value": "primary metric", "split": ""})
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return _tidy(figure, title)


def _angle(cos: float) -> float:
    return math.degrees(math.acos(max(-1.0, min(1.0, cos)))) if math.isfinite(cos) else math.nan


def conflict_heatmap(conflicts: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Angle between forget-task (rows) and retain-task (columns) gradients; over 90 degrees is
    a conflict (cosine < 0). Cells show the angle and the cosine.

    Args:
        conflicts: rows forget_task, retain_task, cosine (several rows per pair are averaged).
    """
    mean = conflicts.groupby(["forget_task", "retain_task"], sort=False)["cosine"].mean().unstack()
    angles = mean.map(_angle)
    text = [[f"{a:.0f}°<br>cos {c:+.2f}" for a, c in zip(ra, rc)]
            for ra, rc in zip(angles.to_numpy(), mean.to_numpy())]
    figure = go.Figure(go.Heatmap(z=angles.to_numpy(), x=list(mean.columns), y=list(mean.index),
                                  zmin=0, zmax=180, zmid=90, colorscale="RdBu_r", text=text,
                                  texttemplate="%{text}", colorbar={"title": "angle °"}))
    figure.update_layout(xaxis_title="retain task", yaxis_title="forget task")
    return _tidy(figure, title)


def conflict_layer_heatmap(by_layer: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Angle per shared layer (rows) and (forget task -> retain task) pair (columns).

    Args:
        by_layer: rows layer, forget_task, retain_task, cosine (`cosine_matrix_by_layer`).
    """
    frame = by_layer.assign(pair=by_layer["forget_task"] + " → " + by_layer["retain_task"])
    mean = frame.groupby(["layer", "pair"], sort=False)["cosine"].mean().unstack()
    figure = go.Figure(go.Heatmap(z=mean.map(_angle).to_numpy(), x=list(mean.columns), y=list(mean.index),
                                  zmin=0, zmax=180, zmid=90, colorscale="RdBu_r",
                                  colorbar={"title": "angle °"}))
    figure.update_layout(yaxis={"autorange": "reversed"})
    return _tidy(figure, title)


def tradeoff_figure(leaderboard: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Forget gap (x) against interference (y: TLI where defined, else ILI), one point per model;
    the best methods sit near the origin. Marker size grows with wall time.

    Args:
        leaderboard: rows model, forget_gap, ili, tli, seconds (a `Comparison.leaderboard`).
    """
    frame = leaderboard.copy()
    frame["interference"] = frame["tli"].where(frame["tli"].notna(), frame["ili"])
    frame["size"] = np.sqrt(frame["seconds"].fillna(0).clip(lower=0)) + 4
    figure = px.scatter(frame, x="forget_gap", y="interference", text="model", size="size",
                        color="model", labels={"forget_gap": "forget gap (%)",
                                               "interference": "interference: TLI, else ILI (%)"})
    figure.update_traces(textposition="top center")
    figure.update_layout(showlegend=False)
    return _tidy(figure, title)


def reduction_interval_figure(headline: pd.DataFrame, title: str | None = None) -> go.Figure:
    """UIS reduction of ours against the strongest baseline with its 95% interval, per benchmark
    (x) and mode (colour), and the mode's target as an open diamond: a target under the whole
    interval is met, one above it missed, one inside it undecided.

    Args:
        headline: rows benchmark, mode, reduction_pct, reduction_low, reduction_high, target_pct
            (a `headline` table).
    """
    figure = go.Figure()
    for mode, rows in headline.groupby("mode", sort=False):
        figure.add_trace(go.Scatter(
            x=rows["benchmark"], y=rows["reduction_pct"], mode="markers", name=f"{mode}: reduction",
            error_y={"type": "data", "symmetric": False,
                     "array": (rows["reduction_high"] - rows["reduction_pct"]).tolist(),
                     "arrayminus": (rows["reduction_pct"] - rows["reduction_low"]).tolist()}))
        figure.add_trace(go.Scatter(x=rows["benchmark"], y=rows["target_pct"], mode="markers",
                                    name=f"{mode}: target", marker={"symbol": "diamond-open", "size": 12}))
    figure.update_layout(yaxis_title="UIS reduction vs strongest baseline (%)", scattermode="group")
    return _tidy(figure, title)


def tuning_curves_figure(curves: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Best score so far against trial number, one line per method, a panel per (benchmark,
    mode): a curve still falling at its last trial had budget left to use.

    Args:
        curves: rows benchmark, mode, method, trial (1-based), best (`tuning_curves`).
    """
    frame = curves.assign(panel=curves["benchmark"] + ", " + curves["mode"])
    figure = px.line(frame, x="trial", y="best", color="method", facet_col="panel", facet_col_wrap=2,
                     labels={"best": "best UIS v2 so far (tuning part)", "trial": "trial"})
    figure.update_yaxes(matches=None, showticklabels=True)
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return _tidy(figure, title)
