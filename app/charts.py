"""Pure chart and table builders: DataFrame or dict in, Plotly figure or DataFrame out.

The result figures shared with the benchmark report (UIS bars and breakdown, metric shifts,
conflict heatmaps, the trade-off scatter) live in core/evaluation/figures.py; the ones with a
trace per model are wrapped here to carry the dashboard's palette (`model_colour`: one fixed
colour per model, the retrain oracle in grey, the same in every chart), the others re-exported,
so every page imports its charts from one place. Streamlit's own Plotly template gives traces
placeholder colours that only its front end resolves: a figure leaving the dashboard (an HTML
report) goes through `exported`.
"""

from __future__ import annotations

import textwrap
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from core.evaluation import figures
from core.evaluation.figures import (  # noqa: F401  (heatmaps re-exported for the pages)
    COMPONENTS,
    conflict_heatmap,
    conflict_layer_heatmap,
)

ORIGINAL_COLOUR = "#1f4e79"
"""The model before unlearning: dark blue."""
ORACLE_COLOUR = "#9e9e9e"
"""The retrain oracle ("retrain"): a neutral grey, the reference rather than a contender."""
METHOD_COLOURS = ("#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
                  "#e15f99", "#1ca71c", "#da16ff", "#b68100", "#750d86", "#511cfb", "#00a08b", "#fc0080",
                  "#6c7c32", "#862a16", "#a777f1", "#620042", "#da60ca", "#af0038")
"""One colour per unlearning method: no blue near the original's, no grey, no black."""
COMPONENT_COLOURS = dict(zip(COMPONENTS.values(), ("#4c78a8", "#f58518", "#54a24b")))
"""The stacked parts of UIS (`uis_breakdown_figure`)."""


def model_colour(name: str) -> str:
    """The colour of a model in every chart: "original" and "retrain" have their own; a method
    takes its place among the registered methods (sorted), so the mapping is fixed for a given
    set of methods; a name not registered (a plugin's) gets one from its name's CRC-32."""
    if name == "original":
        return ORIGINAL_COLOUR
    if name == "retrain":
        return ORACLE_COLOUR
    from core.unlearning import list_unlearners

    methods = [m for m in list_unlearners() if m != "retrain"]
    index = methods.index(name) if name in methods else zlib.crc32(name.encode())
    return METHOD_COLOURS[index % len(METHOD_COLOURS)]


def contrast_colours(method_a: str, method_b: str) -> dict[str, str]:
    """The colours of a contrast of two runs whose models are named "A" and "B" (beside "original"
    and "retrain"): each run in its method's colour (`model_colour`); when both runs are of one
    method, B takes the next method colour, so A and B always differ."""
    colour_a, colour_b = model_colour(method_a), model_colour(method_b)
    if colour_b == colour_a:
        colour_b = METHOD_COLOURS[(METHOD_COLOURS.index(colour_a) + 1) % len(METHOD_COLOURS)]
    return {"original": ORIGINAL_COLOUR, "A": colour_a, "B": colour_b, "retrain": ORACLE_COLOUR}


def _painted(figure: go.Figure, colours) -> go.Figure:
    """Every trace named in `colours` (a mapping or a function of the name) in its colour, and
    room for the axis labels (automargin)."""
    for trace in figure.data:
        colour = colours(trace.name) if callable(colours) else colours.get(trace.name)
        if colour is not None:
            trace.update(marker_color=colour)
    figure.update_xaxes(automargin=True)
    figure.update_yaxes(automargin=True)
    return figure


def metric_shift_figure(scores: pd.DataFrame, title: str | None = None) -> go.Figure:
    """`core.evaluation.figures.metric_shift_figure` in the model palette (`model_colour`)."""
    return _painted(figures.metric_shift_figure(scores, title), model_colour)


def uis_bar_figure(summary: pd.DataFrame, title: str | None = None) -> go.Figure:
    """`core.evaluation.figures.uis_bar_figure` in the model palette (`model_colour`)."""
    return _painted(figures.uis_bar_figure(summary, title), model_colour)


def tradeoff_figure(leaderboard: pd.DataFrame, title: str | None = None) -> go.Figure:
    """`core.evaluation.figures.tradeoff_figure` in the model palette (`model_colour`)."""
    return _painted(figures.tradeoff_figure(leaderboard, title), model_colour)


def uis_breakdown_figure(breakdown: pd.DataFrame, title: str | None = None) -> go.Figure:
    """`core.evaluation.figures.uis_breakdown_figure` with fixed component colours."""
    return _painted(figures.uis_breakdown_figure(breakdown, title), COMPONENT_COLOURS)


KPIS: dict[str, tuple[str, str]] = {
    "uis2": ("UIS v2", "The headline score (benchmarks/DECISIONS.md section 10): per task the mean of the "
             "relative changes of its primary metric on the forget images (for a kept task: the kept "
             "images), the test set and the retained training images, referenced to the retrain oracle "
             "when the run has one, else to the original; x100, averaged over tasks. Lower is better; "
             "the oracle scores 0."),
    "uis": ("UIS (v1)", "Protocol 3's score: per task the mean of the test drift and the forget gap (for a "
            "kept task: the kept drift), relative to the original; x100, averaged over tasks. Lower is "
            "better. The original's own UIS (v1) is its memorisation gap, the score of doing nothing."),
    "oracle_gap": ("gap to oracle", "How far the model's primary metrics are from the retrain oracle's "
                   "(a model never trained on the forget pairs): 100 x the mean |difference| over "
                   "splits and tasks. Lower is better; 0 = the oracle."),
    "uis_oracle": ("UIS vs oracle (v1)", "UIS (v1) with the retrain oracle's own scores as the reference "
                   "on every split. Lower is better; the oracle scores 0."),
    "forget_gap": ("forget gap", "How far the forget images' primary metric is from the original's level "
                   "on unseen (test) images, relative, x100, over the forgotten tasks. Lower is better "
                   "(0 = the forget images look unseen)."),
    "ili": ("ILI", "Instance-level interference: the relative change of each task's primary metric on "
            "the retained training images (a fixed sample), x100. Lower is better."),
    "tli": ("TLI", "Task-level interference: the relative change of the kept tasks and of the "
            "non-forgotten tasks' test scores, x100; none in full-task unlearning. Lower is better."),
    "mia_auc": ("MIA AUC", "Membership attack: the AUC of telling the forget images from unseen images "
                "by their losses, with its 95% interval. 0.5 = indistinguishable; best near the retrain "
                "oracle's value."),
    "mia_efficacy": ("MIA efficacy", "The share of forget images the membership attack calls unseen. "
                     "Best near the retrain oracle's value."),
    "mia_ref_auc": ("reference MIA AUC", "A sharper attack that compares each image's loss with the "
                    "retrain oracle's (LiRA-style), with its 95% interval; only with an oracle. 0.5 = "
                    "indistinguishable, the ideal."),
    "seconds": ("time (s)", "Wall time of the unlearning run (or of retraining, for the oracle). Lower "
                "is better."),
}
"""Every score a person sees: leaderboard column -> (label, definition and good direction), the
help text of the dashboard's tiles and the column names of its tables and reports."""

MODEL_LABELS = {"original": "original (before unlearning)", "retrain": "retrain oracle"}

_INTERVALS = {"mia_auc": ("mia_auc_low", "mia_auc_high"),
              "mia_ref_auc": ("mia_ref_auc_low", "mia_ref_auc_high")}
_DIGITS = {"mia_auc": 3, "mia_efficacy": 3, "mia_ref_auc": 3, "seconds": 1}


def shown_number(value: Any, digits: int = 2) -> str:
    """A score as a person reads it: rounded, or "–" when it is missing (None, NaN)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not np.isfinite(value):
        return "–"
    return f"{value:.{digits}f}"


def shown_model(name: str, approximate_oracle: bool = False) -> str:
    """A model's name in a table: the original and the oracle in words."""
    if name == "retrain" and approximate_oracle:
        return "retrain oracle (approximate)"
    return MODEL_LABELS.get(name, name)


def person_table(leaderboard: pd.DataFrame, approximate_oracle: bool = False) -> pd.DataFrame:
    """A leaderboard for a person: one row per model (labelled), the `KPIS` columns under their
    labels, rounded, an AUC with its 95% interval in one cell, "–" where a score does not apply
    (no raw column names, no None or NaN); columns that are missing for every model left out."""
    rows = []
    for record in leaderboard.to_dict("records"):
        row = {"model": shown_model(str(record["model"]), approximate_oracle)}
        for column, (label, _) in KPIS.items():
            if column not in record:
                continue
            text = shown_number(record[column], _DIGITS.get(column, 2))
            if column in _INTERVALS and text != "–":
                low, high = (record.get(c) for c in _INTERVALS[column])
                if shown_number(low) != "–" and shown_number(high) != "–":
                    text += f" [{low:.2f}, {high:.2f}]"
            row[label] = text
        rows.append(row)
    table = pd.DataFrame(rows)
    empty = [c for c in table.columns if c != "model" and (table[c] == "–").all()]
    return table.drop(columns=empty)


SPLIT_LABELS = {"forget": "forget images (forgotten tasks)", "kept": "forget images (kept tasks)",
                "retain": "retained training images", "test": "test set"}


def split_table(scores: pd.DataFrame, method: str, approximate_oracle: bool = False) -> pd.DataFrame:
    """Each task's primary metric per split: before (the original), after (`method`) and the
    retrain oracle's when it was scored, and the change after - before; rows in the order
    task, split (forget, kept, retain, test); values rounded to 3 digits, "–" where missing."""
    primary = scores[scores["primary"].astype(bool)] if "primary" in scores else scores
    models = [m for m in ("original", method, "retrain") if m in set(primary["model"])]
    wide = primary.pivot_table(index=["task", "split"], columns="model", values="value", sort=False)
    metric = primary.drop_duplicates(["task", "split"]).set_index(["task", "split"])["metric"]
    order = {s: i for i, s in enumerate(SPLIT_LABELS)}
    keys = sorted(wide.index, key=lambda k: (list(dict.fromkeys(primary["task"])).index(k[0]),
                                             order.get(k[1], len(order))))
    rows = []
    for task, split in keys:
        values = {m: wide.at[(task, split), m] if m in wide.columns else np.nan for m in models}
        row = {"task": task, "split": SPLIT_LABELS.get(split, split), "metric": metric[(task, split)]}
        row.update({shown_model(m, approximate_oracle) if m != method else f"after ({method})":
                    shown_number(values[m], 3) for m in models})
        change = values.get(method, np.nan) - values.get("original", np.nan)
        row["change"] = "–" if not np.isfinite(change) else f"{change:+.3f}"
        rows.append(row)
    return pd.DataFrame(rows)


EXPORT_MARGIN = {"l": 80, "r": 30, "t": 80, "b": 80}


def exported(figure: go.Figure) -> go.Figure:
    """A copy of `figure` for a file that leaves the dashboard: Plotly's "plotly_white" template
    instead of Streamlit's (whose placeholder colours draw black outside Streamlit), margins wide
    enough for the title and axis labels, and axes that grow their margins to fit."""
    copy = go.Figure(figure)
    copy.update_layout(template="plotly_white", margin=EXPORT_MARGIN)
    copy.update_xaxes(automargin=True)
    copy.update_yaxes(automargin=True)
    return copy


def comparison_figures(comparison) -> dict[str, go.Figure]:
    """The Compare page's charts of a `core.evaluation.Comparison`, by title: the trade-off, UIS
    per model, its breakdown, and the primary metric per split."""
    board = comparison.leaderboard.sort_values("uis")
    summary = board.rename(columns={"uis": "uis_mean"}).assign(uis_std=0.0)
    primary = comparison.scores[comparison.scores["primary"]]
    titled = {"Which method interferes least: forget gap against interference": tradeoff_figure(board),
              "UIS (lower is better)": uis_bar_figure(summary),
              "UIS by task and component": uis_breakdown_figure(comparison.breakdown),
              "Primary metric per split": metric_shift_figure(primary)}
    return {title: figure.update_layout(title=title) for title, figure in titled.items()}


def comparison_report(board: pd.DataFrame, charts: Mapping[str, go.Figure], intro: str) -> str:
    """The Compare page's HTML report: the leaderboard `board`, then `charts` (`exported`)."""
    from core.evaluation.report import html_page

    return html_page("Method comparison", [("Leaderboard", board),
                                           *((title, exported(figure)) for title, figure in charts.items())],
                     intro)


def metrics_frame(metrics: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """Tidy rows (split, task, metric, value) from {split: {task: {metric: value}}}; entries of
    another shape (an unlearned model's before/after rows) are left out. A value that is not a
    number raises ValueError naming it."""
    rows = [
        {"split": split, "task": task, "metric": metric, "value": value}
        for split, tasks in metrics.items() if isinstance(tasks, dict)
        for task, values in tasks.items()
        for metric, value in (values.items() if isinstance(values, dict) else [(None, values)])
    ]
    for row in rows:
        if isinstance(row["value"], bool) or not isinstance(row["value"], int | float):
            where = "/".join(str(row[k]) for k in ("split", "task", "metric") if row[k] is not None)
            raise ValueError(f"the card's metric {where} is {row['value']!r}; accepted: a number")
    return pd.DataFrame(rows, columns=["split", "task", "metric", "value"])


def primary_metric_chart(frame: pd.DataFrame, primary: dict[str, str]) -> go.Figure:
    """Grouped bars of each task's primary metric per split.

    Args:
        frame: tidy metrics from `metrics_frame`.
        primary: {task: primary metric name}.
    """
    keep = frame[frame.apply(lambda row: primary.get(row["task"]) == row["metric"], axis=1)]
    keep = keep.assign(label=keep["task"] + " (" + keep["metric"] + ")")
    figure = px.bar(keep, x="label", y="value", color="split", barmode="group",
                    labels={"label": "task (primary metric)", "value": "score"},
                    range_y=[0, 1])
    figure.update_layout(margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend_title_text="")
    return figure


def history_frame(history: Sequence[Mapping[str, float]]) -> pd.DataFrame:
    """Tidy rows (step, kind, task, loss) from an unlearning history ({"step", "forget/<task>",
    "retain/<task>"} per step)."""
    rows = [{"step": entry["step"], "kind": key.split("/", 1)[0], "task": key.split("/", 1)[1],
             "loss": value}
            for entry in history for key, value in entry.items() if "/" in key]
    return pd.DataFrame(rows, columns=["step", "kind", "task", "loss"])


def loss_curves_figure(history: Sequence[Mapping[str, float]]) -> go.Figure:
    """Per-task forget (solid) and retain (dotted) losses against the step."""
    frame = history_frame(history)
    figure = px.line(frame, x="step", y="loss", color="task", line_dash="kind", markers=True,
                     category_orders={"kind": ["forget", "retain"]})
    figure.update_layout(margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend_title_text="")
    return figure


def subspace_ranks_frame(ranks: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """Rows (layer, side, rank) of the union bases from interference_aware's
    extras["subspace_ranks"] ({layer: {"input": {..., "union": r}, "output": {..., "union": r}}})."""
    rows = [{"layer": layer, "side": side, "rank": int(groups.get("union", max(groups.values(), default=0)))}
            for layer, sides in ranks.items() for side, groups in sides.items() if groups]
    return pd.DataFrame(rows, columns=["layer", "side", "rank"])


def subspace_ranks_figure(ranks: Mapping[str, Mapping[str, Any]]) -> go.Figure:
    """Rank of the protected input and output subspace of every shared layer."""
    figure = px.bar(subspace_ranks_frame(ranks), x="layer", y="rank", color="side", barmode="group")
    figure.update_layout(margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend_title_text="")
    return figure


def attack_histogram(scores: pd.DataFrame, score: str, titles: Mapping[str, str] | None = None,
                     colours: Mapping[str, str] | None = None) -> go.Figure:
    """One panel per model of a `core.evaluation.attack.attack_scores` frame: the distribution
    of `score` in each group (forget, retain, unseen; each group's share per bin, overlaid), on
    shared axes; each panel's title in its model's colour (`panel_title_colours`)."""
    models = list(dict.fromkeys(scores["model"]))
    figure = make_subplots(rows=1, cols=len(models), shared_yaxes=True, horizontal_spacing=0.03,
                           subplot_titles=[(titles or {}).get(m, m) for m in models])
    for column, model in enumerate(models, 1):
        rows = scores[scores["model"] == model]
        for group, colour in GROUP_COLOURS.items():
            values = rows.loc[rows["group"] == group, score]
            if values.empty:
                continue
            figure.add_trace(go.Histogram(x=values, name=group, legendgroup=group, showlegend=column == 1,
                                          histnorm="percent", opacity=0.55, marker_color=colour,
                                          nbinsx=40), row=1, col=column)
    figure.update_layout(barmode="overlay", legend_title_text="", height=320,
                         margin={"l": 10, "r": 10, "t": 40, "b": 10})
    figure.update_xaxes(title_text="score (higher = more member-like)", automargin=True)
    figure.update_yaxes(title_text="share of the group (%)", row=1, col=1, automargin=True)
    return panel_title_colours(figure, models, colours)


def panel_title_colours(figure: go.Figure, models: Sequence[str],
                        colours: Mapping[str, str] | None = None) -> go.Figure:
    """The subplot titles of a figure with one panel per model (`models`, in panel order) in each
    model's colour: `colours[model]`, else `model_colour`."""
    for annotation, model in zip(figure.layout.annotations, models):
        annotation.font.color = (colours or {}).get(model) or model_colour(model)
    return figure


def roc_figure(curves: pd.DataFrame, titles: Mapping[str, str] | None = None,
               colours: Mapping[str, str] | None = None) -> go.Figure:
    """ROC curves of the forget instances (positives) against the unseen ones: `curves` has
    rows model, fpr, tpr (`core.evaluation.attack.roc_points` per model); one line per model in
    its colour (`colours[model]`, else `model_colour`), the chance diagonal dotted."""
    figure = go.Figure()
    for model, rows in curves.groupby("model", sort=False):
        figure.add_trace(go.Scatter(x=rows["fpr"], y=rows["tpr"], mode="lines", line_shape="hv",
                                    name=(titles or {}).get(str(model), str(model)),
                                    line={"color": (colours or {}).get(str(model))
                                          or model_colour(str(model))}))
    figure.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                                line={"dash": "dot", "color": "#bbbbbb"}))
    figure.update_layout(xaxis_title="false positive rate (unseen scored member)",
                         yaxis_title="true positive rate (forget scored member)", height=380,
                         legend_title_text="", margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return figure


def cka_heatmap(similarity: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Linear CKA of a `core.evaluation.similarity.layer_similarity` frame: one row per layer
    (model order, top to bottom), one column per compared pair and split, 0 (unrelated) to 1
    (the same representation up to rotation and scale), the value written in each cell."""
    table = similarity.assign(column=similarity["pair"] + " · " + similarity["split"]).pivot_table(
        index="layer", columns="column", values="cka", sort=False)
    layers = list(dict.fromkeys(similarity["layer"]))
    columns = list(dict.fromkeys(similarity["pair"] + " · " + similarity["split"]))
    table = table.reindex(index=layers, columns=columns)
    figure = go.Figure(go.Heatmap(z=table.to_numpy(), x=columns, y=layers, zmin=0, zmax=1,
                                  colorscale="Viridis", texttemplate="%{z:.3f}",
                                  colorbar={"title": "CKA"},
                                  hovertemplate="%{y}<br>%{x}<br>CKA %{z:.3f}<extra></extra>"))
    figure.update_yaxes(autorange="reversed", automargin=True)
    figure.update_xaxes(automargin=True, tickangle=-30)
    figure.update_layout(title=title, height=max(300, 28 * len(layers) + 140),
                         margin={"l": 10, "r": 10, "t": 40 if title else 10, "b": 10})
    return figure


def geometry_table(geometry: pd.DataFrame) -> pd.DataFrame:
    """A `core.evaluation.geometry.task_geometry` frame as one row per layer (model order) and one
    column per measure and task pair ("cross_task_cos segmentation/depth") or target task
    ("output_saturation forgetting depth")."""
    pair = geometry["task"] + "/" + geometry["other"]
    saturation = geometry["measure"] == "output_saturation"
    column = geometry["measure"] + " " + pair.where(~saturation, "forgetting " + geometry["task"])
    table = geometry.assign(column=column).pivot_table(index="layer", columns="column", values="value",
                                                       sort=False)
    return table.reset_index().rename_axis(columns=None)


def config_fields(config_class) -> list[dict[str, Any]]:
    """The form of a method's config dataclass: one dict per field with name, default, kind
    (bool / int / float / str), low, high, choices and help, in the dataclass's order."""
    from dataclasses import fields

    out = []
    for spec in fields(config_class):
        meta = dict(spec.metadata)
        out.append({"name": spec.name, "default": spec.default, "kind": type(spec.default).__name__,
                    "low": meta.get("low"), "high": meta.get("high"), "choices": meta.get("choices"),
                    "help": meta.get("help", "")})
    return out


WEBGL_FROM = 1000
"""Points from which a map draws with WebGL (`points_trace`): below it SVG, whose chart opens
faster in a browser without a GPU (a WebGL context costs about 0.1 s there)."""


def points_trace(count: int):
    """The scatter trace class for a map of `count` points: WebGL from `WEBGL_FROM` points on."""
    return go.Scattergl if count >= WEBGL_FROM else go.Scatter


def instance_scatter(table: pd.DataFrame, colour: str, selected: list[int]) -> go.Figure:
    """The instance map: one point per row at (x, y), coloured by column `colour`, with the
    `selected` ids ringed in a second trace.

    Args:
        table: `core.explore.instance_table` output (columns "id", "x", "y" and `colour`).
        colour: the column to colour by, e.g. "depth:loss".
        selected: ids to highlight (ids not in `table` are skipped).
    Both traces carry the ids as `customdata`, so a box or lasso selection event maps back to
    ids whichever trace its points come from. Drag mode is lasso. WebGL traces for a map of
    thousands of instances (`points_trace`), so it draws and pans quickly.
    """
    chosen = table[table["id"].isin(selected)]
    trace = points_trace(len(table))
    figure = go.Figure([
        trace(x=table["x"], y=table["y"], mode="markers", name="instances",
                   customdata=table["id"], hovertemplate=f"id %{{customdata}}<br>{colour} "
                   "%{marker.color:.3f}<extra></extra>",
                   marker={"color": table[colour], "colorscale": "Viridis", "size": 7,
                           "colorbar": {"title": {"text": colour}}}),
        trace(x=chosen["x"], y=chosen["y"], mode="markers", name="forget set",
                   customdata=chosen["id"], hovertemplate="id %{customdata}, to forget<extra></extra>",
                   marker={"color": "rgba(0,0,0,0)", "size": 12, "line": {"color": "crimson", "width": 2}}),
    ])
    figure.update_layout(dragmode="lasso", margin={"l": 10, "r": 10, "t": 30, "b": 10},
                         xaxis_title="PC 1 of backbone features", yaxis_title="PC 2",
                         legend={"orientation": "h", "y": 1.08})
    return figure


def selected_ids(points: list[dict[str, Any]]) -> set[int]:
    """The ids of the points of an `instance_scatter` selection event (`event.selection.points`),
    read from their customdata, which plotly.js hands back as the id or as a one-item list."""
    return {int(p["customdata"][0] if isinstance(p["customdata"], list) else p["customdata"])
            for p in points}


def attribution_figure(image: np.ndarray, before: np.ndarray, after: np.ndarray, title: str) -> go.Figure:
    """Input, attribution before and after unlearning, side by side, on one colour scale.

    Args:
        image: (H, W, 3) uint8 input image.
        before, after: (H, W) attribution maps; the colour scale is symmetric around 0 and shared,
            red where a pixel raises the score, blue where it lowers it.
        title: the figure title.
    """
    size = image.shape[:2]
    if image.ndim != 3 or image.shape[2] != 3 or before.shape != size or after.shape != size:
        raise ValueError(f"shapes {image.shape}, {before.shape}, {after.shape} do not match; expected "
                         "(H, W, 3) for the image and (H, W) for both maps")
    bound = float(max(np.abs(before).max(), np.abs(after).max())) or 1.0
    figure = make_subplots(rows=1, cols=3, subplot_titles=("Input", "Before unlearning", "After unlearning"),
                           horizontal_spacing=0.04)
    figure.add_trace(go.Image(z=image), row=1, col=1)
    for col, values in ((2, before), (3, after)):
        figure.add_trace(go.Heatmap(z=values, coloraxis="coloraxis"), row=1, col=col)
    figure.update_layout(title=title, coloraxis={"colorscale": "RdBu", "reversescale": True,
                                                 "cmin": -bound, "cmax": bound,
                                                 "colorbar": {"title": "attribution"}},
                         margin={"l": 10, "r": 10, "t": 60, "b": 10})
    figure.update_xaxes(showticklabels=False, constrain="domain")
    for col, x_axis in ((1, "x"), (2, "x2"), (3, "x3")):  # square pixels, row 0 at the top
        figure.update_yaxes(autorange="reversed", scaleanchor=x_axis, showticklabels=False, row=1, col=col)
    return figure


def class_iou_figure(table: pd.DataFrame, task: str, titles: Mapping[str, str] | None = None,
                     colours: Mapping[str, str] | None = None) -> go.Figure:
    """IoU per class of one task (`core.evaluation.per_class.per_class_table` rows), bars per model
    in the model's colour (`colours[model]`, else `model_colour`) named by `titles[model]`, one
    panel per split."""
    rows = table[table["task"] == task]
    figure = px.bar(rows, x="class", y="iou", color="model", barmode="group", facet_col="split",
                    labels={"iou": "IoU", "class": "class"},
                    title=f"{task}: IoU per class, per split (higher is closer to the labels)")
    figure.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    _painted(figure, lambda model: (colours or {}).get(model) or model_colour(model))
    return figure.for_each_trace(lambda trace: trace.update(name=(titles or {}).get(trace.name, trace.name)))


def confusion_change_figure(change: np.ndarray, classes: Sequence[str], title: str, models: str,
                            explanation: str) -> go.Figure:
    """A row-normalised confusion change (`core.evaluation.per_class.confusion_change`) as a
    heatmap: rows the true class, columns the predicted one, red where a share grew. The title
    (`title`, then `models`: which model minus which, then a smaller `explanation`) is wrapped
    into lines the figure's width holds (about 9 px a character at the title's size)."""
    width = max(600, 120 + 60 * len(classes))
    per_line = (width - 60) // 9
    lines = textwrap.wrap(f"{title}:", per_line) + textwrap.wrap(models, per_line) + [
        f"<span style='font-size:12px'>{line}</span>" for line in textwrap.wrap(explanation, per_line)]
    figure = go.Figure(go.Heatmap(z=change, x=list(classes), y=list(classes), zmid=0, colorscale="RdBu_r",
                                  colorbar={"title": "change of share"},
                                  hovertemplate="true %{y}, predicted %{x}: %{z:+.3f}<extra></extra>"))
    figure.update_layout(title={"text": "<br>".join(lines), "font": {"size": 15}}, width=width,
                         height=width - 60 + 22 * len(lines), margin={"t": 40 + 22 * len(lines)},
                         xaxis_title="predicted class", yaxis_title="true class", yaxis_autorange="reversed")
    return _painted(figure, {})


def class_change_table(table: pd.DataFrame, task: str, methods: Sequence[str]) -> pd.DataFrame:
    """One row per (split, class) of a task: true pixels, IoU before, the IoU of each of `methods`
    (the unlearned models, as the table names them) and of the oracle where scored, then each
    method's IoU minus before ("change <method>"); for a person (no raw column names)."""
    rows = table[table["task"] == task]
    wide = rows.pivot_table(index=["split", "class"], columns="model", values="iou", sort=False)
    pixels = rows[rows["model"] == "original"].set_index(["split", "class"])["pixels"]
    shown = pd.DataFrame({"true pixels": pixels, "IoU before": wide.get("original"),
                          **{f"IoU {m}": wide.get(m) for m in methods}})
    if "retrain" in wide:
        shown["IoU of the oracle"] = wide["retrain"]
    for method in methods:
        shown[f"change {method}"] = shown[f"IoU {method}"] - shown["IoU before"]
    return shown.reset_index()


GROUP_COLOURS = {"forget": "crimson", "retain": "#7f7f7f", "unseen": "#1f77b4"}
"""The twin maps' groups: the forget set in red, the retain sample in grey, unseen images in blue."""


def twin_map_figure(frame: pd.DataFrame, selected: Sequence[int] = (),
                    titles: Mapping[str, str] | None = None,
                    colours: Mapping[str, str] | None = None) -> go.Figure:
    """One panel per model of a `core.explore.twin_map` frame, on shared axes (one projection),
    points coloured by group (WebGL for thousands, `points_trace`), the `selected` ids ringed in
    every panel (linked), each panel's title in its model's colour (`panel_title_colours`). Every
    point carries its id as customdata, so a box or lasso selection in any panel maps back to ids."""
    models = list(dict.fromkeys(frame["model"]))
    trace = points_trace(len(frame))
    figure = make_subplots(rows=1, cols=len(models), shared_xaxes=True, shared_yaxes=True,
                           subplot_titles=[(titles or {}).get(m, m) for m in models],
                           horizontal_spacing=0.03)
    for column, model in enumerate(models, 1):
        rows = frame[frame["model"] == model]
        for group, colour in GROUP_COLOURS.items():
            points = rows[rows["group"] == group]
            if points.empty:
                continue
            figure.add_trace(trace(
                x=points["x"], y=points["y"], mode="markers", name=group, legendgroup=group,
                showlegend=column == 1, customdata=points["id"],
                hovertemplate=f"{group} image %{{customdata}}<extra>{model}</extra>",
                marker={"color": colour, "size": 6 if group == "retain" else 8, "opacity": 0.75}),
                row=1, col=column)
        chosen = rows[rows["id"].isin(list(selected)) & (rows["group"] != "unseen")]
        if not chosen.empty:
            figure.add_trace(trace(
                x=chosen["x"], y=chosen["y"], mode="markers", name="selected", legendgroup="selected",
                showlegend=column == 1, customdata=chosen["id"],
                hovertemplate="selected image %{customdata}<extra></extra>",
                marker={"color": "rgba(0,0,0,0)", "size": 14, "line": {"color": "black", "width": 2}}),
                row=1, col=column)
    figure.update_layout(dragmode="lasso", height=420, legend={"orientation": "h", "y": 1.12},
                         margin={"l": 10, "r": 10, "t": 60, "b": 10})
    figure.update_xaxes(title_text="PC 1 of the original's features", row=1, col=1)
    figure.update_yaxes(title_text="PC 2")
    return panel_title_colours(_painted(figure, {}), models, colours)


def settings_text(method: str, config: Mapping[str, Any]) -> str:
    """A run's settings for a person: the knobs that differ from the method's defaults, rounded
    ("defaults" when none; the seed and device left out)."""
    from core.evaluation.tuning import format_config
    from core.unlearning import get_unlearner

    try:
        defaults = get_unlearner(method).config.to_dict()
    except (KeyError, ValueError):  # a method no longer registered (a plugin not loaded): every knob
        defaults = {}
    changed = {k: v for k, v in config.items()
               if k not in ("seed", "device") and defaults.get(k, object()) != v}
    return format_config(changed) or "defaults"


def screened_table(table: pd.DataFrame, leaderboard: pd.DataFrame,
                   runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A `person_table` of `leaderboard` (same row order) with each model's ledger run and its
    settings (`settings_text`) beside its scores: the screening view of a comparison."""
    by_method = {r["method"]: r for r in runs}
    screened = table.copy()
    screened.insert(1, "run", [f"#L{by_method[m]['run']}" if m in by_method else "–"
                               for m in leaderboard["model"]])
    screened["settings"] = [settings_text(m, by_method[m]["config"]) if m in by_method else "–"
                            for m in leaderboard["model"]]
    return screened
