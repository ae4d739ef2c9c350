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
    uis_bar_figure,
    uis_breakdown_figure,
)

REFERENCE_ORDER = ("original", "retrain")
_COLUMNS = [("uis", "UIS"), ("forget_gap", "forget gap"), ("ili", "ILI"), ("tli", "TLI"),
            ("mia_auc", "MIA AUC"), ("seconds", "time (s)")]


def _mean_std(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if math.isfinite(std) else "")


def ordered(summary: pd.DataFrame) -> pd.DataFrame:
    """References first (original, retrain), then methods by mean UIS."""
    rank = summary["model"].map({m: i for i, m in enumerate(REFERENCE_ORDER)}).fillna(len(REFERENCE_ORDER))
    return summary.assign(_rank=rank).sort_values(["_rank", "uis_mean"]).drop(columns="_rank")


def markdown_table(summary: pd.DataFrame) -> str:
    """One group of a `summary_table` as Markdown: method, cells, mean ± std of each metric."""
    head = "| method | cells | " + " | ".join(label for _, label in _COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(_COLUMNS) + 2)]
    for row in ordered(summary).itertuples(index=False):
        values = row._asdict()
        cells = [_mean_std(values[f"{key}_mean"], values[f"{key}_std"], 3 if key == "mia_auc" else 2)
                 for key, _ in _COLUMNS]
        name = f"*{row.model}*" if row.model in REFERENCE_ORDER else row.model
        lines.append(f"| {name} | {row.cells} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline_table(headline: pd.DataFrame) -> str:
    lines = ["| benchmark | mode | interference_aware UIS | strongest baseline | its UIS | UIS reduction "
             "| original UIS | retrain UIS | MIA AUC ours / oracle |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in headline.itertuples(index=False):
        lines.append(f"| {r.benchmark} | {r.mode} | {r.ours_uis:.2f} | {r.strongest_baseline} | "
                     f"{r.baseline_uis:.2f} | {_mean_std(r.reduction_pct, r.reduction_std, 1)} % | "
                     f"{r.original_uis:.2f} | {r.retrain_uis:.2f} | "
                     f"{r.ours_mia_auc:.3f} / {r.retrain_mia_auc:.3f} |")
    return "\n".join(lines)


def _groups(summary: pd.DataFrame, keys: Sequence[str]):
    for values, group in summary.groupby(list(keys), sort=False):
        values = values if isinstance(values, tuple) else (values,)
        yield ", ".join(f"{k} {v}" if k == "ratio" else str(v) for k, v in zip(keys, values)), group


def machine() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    return (f"{platform.machine()}, {torch.get_num_threads()} torch threads, {device}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def markdown_report(frames: Mapping[str, pd.DataFrame], plan, seconds: float | None = None) -> str:
    """summary.md: headline, then per (benchmark, mode), then per (benchmark, ratio, setting)."""
    parts = ["# Benchmark results", "",
             f"Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Machine: {machine()}.",
             "" if seconds is None else f"Wall time of this invocation: {seconds:.0f} s.", "",
             "UIS, forget gap, ILI and TLI are percentages (lower is better); MIA AUC is the AUC of "
             "forget vs test instances under the loss attack (0.5 = indistinguishable from unseen "
             "data); time is the unlearning wall time. Mean ± std over cells (ratios, settings "
             "and seeds).", "", "## Headline", "", headline_table(frames["headline"]), "",
             "## Per benchmark and mode", ""]
    for label, group in _groups(frames["summary"], ["benchmark", "mode"]):
        parts += [f"### {label}", "", markdown_table(group), ""]
    parts += ["## Per setting (mean ± std over seeds)", ""]
    for label, group in _groups(frames["details"], ["benchmark", "ratio", "setting"]):
        parts += [f"### {label}", "", markdown_table(group), ""]
    parts += ["## Plan", "", "```json", json.dumps(plan.to_dict(), indent=1), "```", ""]
    return "\n".join(parts)


def report_figures(frames: Mapping[str, pd.DataFrame]) -> list[tuple[str, object]]:
    """(title, figure) pairs of the HTML report, per benchmark and mode."""
    figures = [("Mean UIS per method (lower is better)", uis_bar_figure(frames["summary"]))]
    keys = ["benchmark", "mode"]
    for (benchmark, mode), group in frames["breakdown"].groupby(keys, sort=False):
        halves = group.groupby(["model", "task"], sort=False)[["test_half", "forget_half", "kept_half"]]
        figures.append((f"UIS breakdown by component: {benchmark}, {mode}",
                        uis_breakdown_figure(halves.mean().reset_index())))
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
    for title, figure in report_figures(frames):
        figure.update_layout(height=600 if title.startswith("Mean UIS") else 420)
        sections.append((title, figure))
    sections.append(("Tables", markdown))
    return html_page("Benchmark report", sections, machine())


def write_report(frames: Mapping[str, pd.DataFrame], plan, out: str | Path,
                 seconds: float | None = None) -> tuple[Path, Path]:
    """Write summary.md and report.html under `out`; returns their paths."""
    out = Path(out)
    markdown = markdown_report(frames, plan, seconds)
    (out / "summary.md").write_text(markdown)
    (out / "report.html").write_text(html_report(frames, plan, markdown))
    return out / "summary.md", out / "report.html"
