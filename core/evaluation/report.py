"""The benchmark's Markdown summary and self-contained HTML report (Plotly inlined, no network)."""

from __future__ import annotations

import html
import json
import math
import platform
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from core.evaluation.figures import (
    conflict_heatmap,
    metric_shift_figure,
    reduction_interval_figure,
    tuning_curves_figure,
    uis_bar_figure,
    uis_breakdown_figure,
)
from core.evaluation.geometry import CONFLICT_THRESHOLD, benchmark_labels
from core.outputs import write_text_atomic

REFERENCE_ORDER = ("original", "retrain", "retrain_2")
_COLUMNS = [("uis2", "UIS v2"), ("uis", "UIS (v1)"), ("forget_gap", "forget gap"), ("ili", "ILI"),
            ("tli", "TLI"),
            ("uis_oracle", "UIS vs oracle"), ("oracle_gap", "gap to oracle"), ("mia_auc", "MIA AUC"),
            ("mia_ref_auc", "ref. MIA AUC"), ("seconds", "time (s)")]
_THREE_DIGITS = {"mia_auc", "mia_ref_auc"}


def _mean_std(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def ordered(summary: pd.DataFrame) -> pd.DataFrame:
    """References first (original, retrain, retrain_2), then methods by mean UIS v2 (by UIS
    where a summary has no UIS v2)."""
    rank = summary["model"].map({m: i for i, m in enumerate(REFERENCE_ORDER)}).fillna(len(REFERENCE_ORDER))
    key = "uis2_mean" if "uis2_mean" in summary and summary["uis2_mean"].notna().any() else "uis_mean"
    return summary.assign(_rank=rank).sort_values(["_rank", key]).drop(columns="_rank")


def markdown_table(summary: pd.DataFrame) -> str:
    """One group of a `summary_table` as Markdown: method, cells, mean ± std of each metric."""
    head = "| method | cells | " + " | ".join(label for _, label in _COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(_COLUMNS) + 2)]
    for row in ordered(summary).itertuples(index=False):
        values = row._asdict()
        cells = [_mean_std(values.get(f"{key}_mean", math.nan), values.get(f"{key}_std", math.nan),
                           3 if key in _THREE_DIGITS else 2)
                 for key, _ in _COLUMNS]
        name = f"*{row.model}*" if row.model in REFERENCE_ORDER else row.model
        lines.append(f"| {name} | {row.cells} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _number(value: float, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _interval(low: float, high: float, digits: int) -> str:
    return f"[{_number(low, digits)}, {_number(high, digits)}]"


def headline_table(headline: pd.DataFrame) -> str:
    """The headline as Markdown: UIS v2 reductions with their 95% intervals and the verdicts."""
    lines = ["| benchmark | mode | cells | interference_aware UIS v2 | strongest baseline | its UIS v2 "
             "| UIS v2 reduction [95% interval] | target | verdict | original UIS v2 "
             "| retrain-vs-retrain floor | UIS (v1): ours / baseline "
             "| UIS vs oracle (v1): ours / baseline | MIA AUC ours / oracle | MIA gap [95% interval] "
             "| MIA verdict (gap <= 0.05) | ref. MIA AUC ours |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in headline.itertuples(index=False):
        lines.append(
            f"| {r.benchmark} | {r.mode} | {r.cells} | {_number(r.ours_uis, 2)} | {r.strongest_baseline} "
            f"| {_number(r.baseline_uis, 2)} | {_number(r.reduction_pct, 1)} % "
            f"{_interval(r.reduction_low, r.reduction_high, 1)} | >= {_number(r.target_pct, 0)} % "
            f"| **{r.verdict}** | {_number(r.original_uis, 2)} "
            f"| {_number(getattr(r, 'floor_uis', math.nan), 2)} "
            f"| {_number(getattr(r, 'ours_uis_v1', math.nan), 2)} / "
            f"{_number(getattr(r, 'baseline_uis_v1', math.nan), 2)} "
            f"| {_number(r.ours_uis_oracle, 2)} / {_number(r.baseline_uis_oracle, 2)} "
            f"| {_number(r.ours_mia_auc, 3)} / {_number(r.retrain_mia_auc, 3)} "
            f"| {_number(r.mia_gap, 3)} {_interval(r.mia_gap_low, r.mia_gap_high, 3)} "
            f"| **{r.mia_verdict}** | {_number(r.ours_mia_ref_auc, 3)} |")
    return "\n".join(lines)


def verdict_table(headline: pd.DataFrame) -> str:
    """The three verdicts of each headline row as Markdown: better than the strongest existing
    baseline, consistent with the paper's reduction, beyond it; and the strongest control that
    carries our target, beside (never instead of) that baseline."""
    lines = ["| benchmark | mode | forget sets | strongest existing baseline "
             "| UIS v2 reduction [95% interval] | better than it | paper | consistent with the paper "
             "| beyond the paper "
             "| strongest control with our target | reduction against it [95% interval] |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in headline.itertuples(index=False):
        control = r.strongest_control if isinstance(r.strongest_control, str) else "–"
        lines.append(
            f"| {r.benchmark} | {r.mode} | {r.clusters} | {r.strongest_baseline} "
            f"| {_number(r.reduction_pct, 1)} % {_interval(r.reduction_low, r.reduction_high, 1)} "
            f"| **{r.better_than_baseline}** | {_number(r.paper_pct, 1)} % | **{r.consistent_with_paper}** "
            f"| **{r.beyond_paper}** | {control} | {_number(r.control_reduction_pct, 1)} % "
            f"{_interval(r.control_reduction_low, r.control_reduction_high, 1)} |")
    return "\n".join(lines)


def paired_table(paired: pd.DataFrame) -> str:
    """Ours against each baseline (wins / ties / losses on UIS v2 cell by cell, the reduction of the
    means with its 95% interval over forget sets, the Wilcoxon signed-rank p-value over forget
    sets and its Holm adjustment over the whole table)."""
    lines = ["| benchmark | mode | baseline | cells | forget sets | wins / ties / losses "
             "| UIS v2 ours / baseline | reduction of the means [95% interval] | Wilcoxon p | Holm p |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in paired.itertuples(index=False):
        lines.append(f"| {r.benchmark} | {r.mode} | {r.baseline} | {r.cells} | {r.clusters} | {r.wins} / "
                     f"{r.ties} / {r.losses} | {_number(r.ours_uis, 2)} / {_number(r.baseline_uis, 2)} "
                     f"| {_number(r.reduction_pct, 1)} % {_interval(r.reduction_low, r.reduction_high, 1)} "
                     f"| {_number(r.wilcoxon_p, 3)} | {_number(r.holm_p, 3)} |")
    return "\n".join(lines)


def noise_floor_table(noise_floor: pd.DataFrame) -> str:
    """The forget-gap noise floor per benchmark, ratio and setting (percent)."""
    lines = ["| benchmark | ratio | setting | set size | pool | draws | forget gap of unseen sets: mean "
             "[95% of draws] |", "|---|---|---|---|---|---|---|"]
    for r in noise_floor.itertuples(index=False):
        lines.append(f"| {r.benchmark} | {r.ratio:g} | {r.setting} | {r.size} | {r.pool} | {r.draws} "
                     f"| {_number(r.mean, 2)} {_interval(r.low, r.high, 2)} |")
    return "\n".join(lines)


def frame_table(frame: pd.DataFrame, digits: int = 2) -> str:
    """Any small frame as a Markdown table."""
    def cell(value):
        return _number(value, digits) if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def oracle_gap_table(oracle: pd.DataFrame) -> pd.DataFrame:
    """Mean over cells of 100 x |primary metric - the oracle's| per benchmark, mode, model, split
    and task, as one row per (benchmark, mode, model) and one column per split/task."""
    if oracle.empty:
        return pd.DataFrame()
    frame = oracle.assign(column=oracle["split"] + "/" + oracle["task"],
                          gap=100 * oracle["gap"].astype(float))
    table = frame.pivot_table(index=["benchmark", "mode", "model"], columns="column", values="gap",
                              aggfunc="mean", sort=False)
    return table.reset_index().rename_axis(columns=None)


def _groups(summary: pd.DataFrame, keys: Sequence[str]):
    for values, group in summary.groupby(list(keys), sort=False):
        values = values if isinstance(values, tuple) else (values,)
        yield ", ".join(f"{k} {v}" if k == "ratio" else str(v) for k, v in zip(keys, values)), group


def machine() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (f"{platform.machine()}, {torch.get_num_threads()} torch threads, {device}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


GEOMETRY_NOTE = (
    "Per benchmark (core.evaluation.geometry, rows in geometry.csv): the peak over shared layers and "
    "task pairs of |mean over retain images of the cosine between two tasks' gradients on the same "
    f"image|, labelled low task conflict below {CONFLICT_THRESHOLD}; the peak |cosine| of a target "
    "task's and a kept task's gradients on the forget images; the mean rank(V) / C_out of "
    "interference_aware's output-side basis over shared layers and partial settings, and in how "
    "many (layer, setting) pairs it spans every channel.")


def wall_time_line(seconds: float | None, invocations: Sequence[Mapping] = ()) -> str:
    """This invocation's wall time and the sum over every invocation that filled the folder."""
    if seconds is None:
        return ""
    line = f"Wall time of this invocation: {seconds:.0f} s."
    if invocations:
        total = sum(float(i["seconds"]) for i in invocations)
        line += (f" Summed over the {len(invocations)} invocations that filled this folder: {total:.0f} s "
                 f"({total / 3600:.2f} h).")
    return line


def markdown_report(frames: Mapping[str, pd.DataFrame], plan, seconds: float | None = None,
                    invocations: Sequence[Mapping] = ()) -> str:
    """summary.md: headline, then per (benchmark, mode), then per (benchmark, ratio, setting)."""
    parts = ["# Benchmark results", "",
             f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}.",
             wall_time_line(seconds, invocations), "",
             "UIS v2 (the score of the headline, the tuning and the ablations) is 100 x the mean over "
             "tasks of the mean of three relative changes of the task's primary metric against the "
             "retrain oracle: on the forget images (forget term; kept drift for a kept task), on the "
             "held-out test part and on a fixed retain sample (instance-level interference); the "
             "oracle scores 0 and retrain_2, a second oracle with another training seed, gives the "
             "floor below which a method cannot be told from the oracle. "
             "UIS (v1, protocol 3's, kept for continuity), forget gap, ILI and TLI are percentages "
             "(lower is better); UIS vs oracle is the v1 score with the retrain oracle's own score on "
             "each split as the reference (the oracle scores 0), gap to oracle is 100 x the mean "
             "|primary metric - the oracle's| over "
             "splits and tasks; MIA AUC is the AUC of forget vs test instances under the loss attack "
             "with balanced classes, ref. MIA AUC that of the attack whose losses are calibrated by "
             "the oracle's (0.5 = indistinguishable from unseen data); time is the unlearning wall "
             "time. Mean ± std over cells (ratios, settings and seeds). Tuning was scored on the val "
             "split's tuning part, never on its test part; the methods saw only its calibration "
             "part. A reduction is that of the means over cells. Intervals are 95% studentized "
             "bootstrap intervals over seeds: each seed trains its own base model and draws the "
             "forget sets, so a seed is drawn with all its ratios and settings. A target is met when "
             "the whole interval clears it, missed when the whole interval falls short, else "
             "undecided; the strongest existing baseline leaves out our variants and the controls "
             "that carry our calibrated target, which are reported beside it.", "", "## Headline", "",
             headline_table(frames["headline"]), "", "### Verdicts", "",
             verdict_table(frames["headline"]), ""]
    if "paired" in frames:
        parts += ["## Ours against each baseline (UIS v2)", "", paired_table(frames["paired"]), ""]
    if "ablations" in frames and not frames["ablations"].empty:
        from core.evaluation.ablations import ablation_markdown

        parts += ["## What each part contributes (ablations and controls, UIS v2)", "",
                  ablation_markdown(frames["ablations"]), ""]
    if "noise_floor" in frames and not frames["noise_floor"].empty:
        parts += ["## Forget-gap noise floor", "",
                  "The forget gap of the original model on random sets of unseen test instances of the "
                  "forget set's size: a forget gap inside this range cannot be told from \"looks "
                  "unseen\".", "", noise_floor_table(frames["noise_floor"]), ""]
    if "counts" in frames:
        parts += ["## Instances per ratio", "", frame_table(frames["counts"]), ""]
    if "geometry" in frames and not frames["geometry"].empty:
        parts += ["## Task geometry of the base models", "", GEOMETRY_NOTE, "",
                  frame_table(benchmark_labels(frames["geometry"]), 3), ""]
    if "oracle" in frames and not frames["oracle"].empty:
        parts += ["## Gap to the retrain oracle per split and task", "",
                  "100 x |primary metric - the oracle's|, mean over cells.", "",
                  frame_table(oracle_gap_table(frames["oracle"])), ""]
    parts += ["## Per benchmark and mode", ""]
    for label, group in _groups(frames["summary"], ["benchmark", "mode"]):
        parts += [f"### {label}", "", markdown_table(group), ""]
    parts += ["## Per setting (mean ± std over seeds)", ""]
    for label, group in _groups(frames["details"], ["benchmark", "ratio", "setting"]):
        parts += [f"### {label}", "", markdown_table(group), ""]
    if "tuning" in frames and not frames["tuning"].empty:
        from core.evaluation.tuning import tuning_markdown

        parts += ["## Tuning", "", "One study per benchmark, mode and method, with its own sampler "
                  "seed. Every method had the same number of trials per study (trials = budget + extra "
                  "trials of the rounds that widened a range whose choice fell on its edge); each trial "
                  "ran every request of the tuning seed in that mode (every ratio and, in partial "
                  "mode, every partial setting: the requests column) and scored their mean UIS v2 "
                  "against each request's retrain oracle on the tuning part of val, on the tuning "
                  "seed's base model (draw 0 of its forget sets). With more than one draw (the "
                  "draws column) the search's best configurations were scored again on the other "
                  "draws, each against its own oracle, and chosen = the lowest mean over the draws "
                  "(best_uis is that mean); else chosen = the best trial's configuration. "
                  "still_improving: the best came in the last quarter of the study's trials (the "
                  "curve had not flattened; the best-so-far curves are in report.html). floor: the "
                  "second oracle's score against the oracle on the same requests; plateaued: the "
                  "best-so-far gained less than the floor over the last quarter.", "",
                  tuning_markdown(frames["tuning"])]
        from core.evaluation.ablations import twin_gaps

        twins = twin_gaps(frames["tuning"])
        if not twins.empty:
            parts += ["### Tuning luck: the same method tuned twice", "",
                      "Each pair runs the same code over the same search space in that mode; only the "
                      "sampler's seed differs, so the gap between their best tuning scores is what the "
                      "budget leaves to luck.", "", frame_table(twins), ""]
    parts += ["## Plan", "", "```json", json.dumps(plan.to_dict(), indent=1), "```", ""]
    return "\n".join(parts)


def report_figures(frames: Mapping[str, pd.DataFrame]) -> list[tuple[str, object]]:
    """(title, figure) pairs of the HTML report, per benchmark and mode."""
    score = "uis2" if "uis2_mean" in frames["summary"] else "uis"
    figures = [("Mean UIS v2 per method (lower is better)" if score == "uis2" else
                "Mean UIS per method (lower is better)", uis_bar_figure(frames["summary"], score=score))]
    if "tuning_curves" in frames and not frames["tuning_curves"].empty:
        figures.append(("Tuning: best UIS v2 so far against trial, per study",
                        tuning_curves_figure(frames["tuning_curves"])))
    keys = ["benchmark", "mode"]
    parts = [c for c in ("forget_part", "kept_part", "test_part", "retain_part", "test_half", "forget_half",
                         "kept_half") if c in frames["breakdown"]]
    for (benchmark, mode), group in frames["breakdown"].groupby(keys, sort=False):
        means = group.groupby(["model", "task"], sort=False)[parts].mean().reset_index()
        figures.append((f"Score breakdown by component: {benchmark}, {mode}", uis_breakdown_figure(means)))
    scores = frames["scores"]
    primary = scores[scores["primary"].astype(bool)]
    for (benchmark, mode), group in primary.groupby(keys, sort=False):
        shifts = group.groupby(["model", "split", "task"], sort=False)["value"].mean().reset_index()
        figures.append((f"Per-task primary metric per split: {benchmark}, {mode}",
                        metric_shift_figure(shifts)))
    for (benchmark, mode), group in frames["conflicts"].groupby(keys, sort=False):
        figures.append((f"Gradient-conflict angles of the original model: {benchmark}, {mode}",
                        conflict_heatmap(group)))
    return figures


def html_page(title: str, sections: Sequence[tuple[str, object]], intro: str = "") -> str:
    """A self-contained HTML page: a heading per section, each a DataFrame (as a table), a
    Plotly figure or preformatted text; plotly.js is inlined once, so it opens offline."""
    body, inlined = [f"<h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>"], False
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        if isinstance(content, pd.DataFrame):
            body.append(content.to_html(index=False, float_format=lambda v: f"{v:.3f}", border=0))
        elif isinstance(content, str):
            body.append(f"<pre>{html.escape(content)}</pre>")
        else:
            body.append(content.to_html(full_html=False, include_plotlyjs=False if inlined else "inline"))
            inlined = True
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:auto;padding:1em}"
             "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:right}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")


def html_report(frames: Mapping[str, pd.DataFrame], plan, markdown: str) -> str:
    """The benchmark's HTML report: headline, every figure of `report_figures`, the tables."""
    sections: list[tuple[str, object]] = [("Headline", frames["headline"])]
    if not frames["headline"].empty:
        sections.append(("UIS reduction against the strongest baseline, 95% intervals and targets",
                         reduction_interval_figure(frames["headline"])))
    for key, title in (("paired", "Ours against each baseline (UIS v2)"),
                       ("ablations", "What each part contributes (ablations and controls, UIS v2)"),
                       ("tuning", "Tuning: trials, best UIS v2 on the tuning part, still improving, "
                                  "chosen configuration"),
                       ("noise_floor", "Forget-gap noise floor (unseen sets of the forget set's size)"),
                       ("counts", "Instances per ratio")):
        if key in frames:
            sections.append((title, frames[key]))
    if "geometry" in frames and not frames["geometry"].empty:
        sections.append(("Task geometry of the base models: " + GEOMETRY_NOTE,
                         benchmark_labels(frames["geometry"])))
    if "oracle" in frames and not frames["oracle"].empty:
        sections.append(("Gap to the retrain oracle per split and task (x100)",
                         oracle_gap_table(frames["oracle"])))
    for title, figure in report_figures(frames):
        figure.update_layout(height=600 if title.startswith(("Mean UIS", "Tuning")) else 420)
        sections.append((title, figure))
    sections.append(("Tables", markdown))
    return html_page("Benchmark report", sections, machine())


def write_report(frames: Mapping[str, pd.DataFrame], plan, out: str | Path,
                 seconds: float | None = None, invocations: Sequence[Mapping] = ()) -> tuple[Path, Path]:
    """Write summary.md and report.html under `out`; returns their paths."""
    out = Path(out)
    markdown = markdown_report(frames, plan, seconds, invocations)
    write_text_atomic(out / "summary.md", markdown)
    write_text_atomic(out / "report.html", html_report(frames, plan, markdown))
    return out / "summary.md", out / "report.html"
