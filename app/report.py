"""The one-page report of a run: a self-contained HTML page (plotly.js inlined, nothing fetched)
that prints to a clean PDF (a print stylesheet: A4, charts and tables kept whole).

A pure function of plain data and figures (`run_report`), so it is tested without a browser;
the Interference and History pages offer it as a download named after the model, the method and
the ticket (`download_name`).
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from app.charts import KPIS, exported, person_table, shown_model, shown_number, split_table
from core.evaluation.verdict import id_ranges

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#111827;max-width:960px;margin:auto;
     padding:1.5em;font-size:14px;line-height:1.4}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.2em 0 .4em;border-bottom:1px solid #e5e7eb}
.sub{color:#4b5563;margin:0 0 1em}
.verdict{background:#eff6ff;border-left:4px solid #2563eb;padding:.7em 1em;margin:1em 0;font-size:1.05em}
.note{color:#4b5563;font-size:.9em}
table{border-collapse:collapse;margin:.3em 0;font-size:.92em}
td,th{padding:3px 10px;text-align:left;border-bottom:1px solid #f3f4f6;vertical-align:top}
th{background:#f9fafb}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:.3em 0}
dt{font-weight:600}dd{margin:0}
.charts{display:flex;flex-wrap:wrap;gap:8px}.chart{break-inside:avoid}
code{font-size:.9em;word-break:break-all}
@page{size:A4;margin:12mm}
@media print{
  body{max-width:none;padding:0;font-size:10.5px}
  h2{break-after:avoid}table,dl,.chart,.verdict{break-inside:avoid}
  .verdict{-webkit-print-color-adjust:exact;print-color-adjust:exact}
  a{color:inherit;text-decoration:none}
}
"""

CHART_SIZE = {"width": 680, "height": 330}
"""Each chart's size in the report: fits the width of an A4 page."""


def download_name(model: str, method: str, ticket: str, suffix: str) -> str:
    """A download's file name from the model, the method and the ticket (the run's reason),
    e.g. "synthetic-indoor-grad_ascent-TICKET-42.html"; characters a file name should not hold
    become "-"."""
    parts = [p for p in (model, method, ticket) if p and p.strip()]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(p.strip() for p in parts)).strip("-.")[:120]
    return f"{stem or 'run'}.{suffix.lstrip('.')}"


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, na_rep="–", escape=True)


def _facts(items: Sequence[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def mia_table(leaderboard: pd.DataFrame, approximate_oracle: bool = False) -> pd.DataFrame:
    """The membership attacks per model: the AUC with its 95% interval, the efficacy and the
    reference attack's AUC ("–" where it was not run)."""
    rows = []
    for record in leaderboard.to_dict("records"):
        auc = shown_number(record.get("mia_auc"), 3)
        low, high = shown_number(record.get("mia_auc_low"), 3), shown_number(record.get("mia_auc_high"), 3)
        ref = shown_number(record.get("mia_ref_auc"), 3)
        rows.append({"model": shown_model(str(record["model"]), approximate_oracle),
                     "attack AUC [95% interval]": (auc if "–" in (auc, low, high)
                                                   else f"{auc} [{low}, {high}]"),
                     "called unseen (efficacy)": shown_number(record.get("mia_efficacy"), 3),
                     "reference attack AUC": ref})
    return pd.DataFrame(rows)


def run_report(*, model: str, method: str, ticket: str, created: str, instances: Sequence[int],
               tasks: Sequence[str], kept_tasks: Sequence[str], config: Mapping[str, Any],
               seconds: float | None, leaderboard: pd.DataFrame, scores: pd.DataFrame, verdict: str,
               figures: Mapping[str, go.Figure], checkpoint: str | None, sha256: str | None,
               model_sha256: str | None, lineage: Sequence[Mapping[str, Any]] = (),
               oracle_note: str | None = None, source: str = "") -> str:
    """The one-page report of a run, as a self-contained HTML page.

    Args:
        model: the original model's name; method, config, seconds: the run's; ticket: the
            reason recorded with the request ("" when none); created: when it was requested.
        instances, tasks, kept_tasks: the request (kept_tasks empty in full-task unlearning).
        leaderboard, scores: the run's `Comparison` frames; verdict: its sentence.
        figures: {title: figure}, drawn in that order (exported: real colours, wide margins).
        checkpoint, sha256: where the unlearned model is saved and its weights' hash;
            model_sha256: the original's; lineage: the ledger's runs from the first original
            model to this one (`Ledger.lineage`), oldest first.
        oracle_note: why the retrain oracle is approximate, when it is.
    """
    approximate = oracle_note is not None
    mode = "partial-task" if kept_tasks else "full-task"
    title = f"Unlearning report: {model}, {method}" + (f", ticket {ticket}" if ticket else "")
    request = [("Ticket / reason", html.escape(ticket) if ticket else "none recorded"),
               ("Requested", html.escape(created or "–")),
               ("Model", f"{html.escape(model)} <code>{html.escape(model_sha256 or '–')}</code>"),
               ("Mode", mode),
               ("Forgotten tasks", html.escape(", ".join(tasks))),
               *([("Kept tasks", html.escape(", ".join(kept_tasks)))] if kept_tasks else []),
               ("Instances", f"{len(set(instances))}: ids {html.escape(id_ranges(instances, limit=200))}"),
               ("Source", html.escape(source or "–"))]
    settings = [("Method", html.escape(method)), ("Time", f"{shown_number(seconds, 1)} s"),
                *((html.escape(str(k)), html.escape(str(v))) for k, v in config.items())]
    definitions = "".join(f"<li><b>{html.escape(label)}</b>: {html.escape(text)}</li>"
                          for label, text in KPIS.values())
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='sub'>{html.escape(mode)} unlearning of {len(set(instances))} instances of "
            f"{html.escape(model)}</p>",
            f"<p class='verdict' id='verdict'>{html.escape(verdict)}</p>"]
    if oracle_note:
        body.append(f"<p class='note'>Retrain oracle: {html.escape(oracle_note)}.</p>")
    body += ["<h2>Request</h2>", _facts(request),
             "<h2>Method and settings</h2>", _facts(settings),
             "<h2>Scores</h2>", _table(person_table(leaderboard, approximate)),
             "<h2>Before, after and the retrain oracle, per task and split (primary metric)</h2>",
             _table(split_table(scores, method, approximate)),
             "<h2>Membership attack</h2>",
             "<p class='note'>Can an attacker tell the forget images from images the model never saw, "
             "by their losses? AUC 0.5 = indistinguishable; the original's AUC is the starting point "
             "and the retrain oracle's the target.</p>",
             _table(mia_table(leaderboard, approximate))]
    charts, inlined = [], False
    for heading, figure in figures.items():
        shown = exported(figure).update_layout(title=heading, **CHART_SIZE)
        charts.append("<div class='chart'>" + shown.to_html(
            full_html=False, include_plotlyjs=False if inlined else "inline",
            config={"displayModeBar": False, "staticPlot": True}) + "</div>")
        inlined = True
    if charts:
        body += ["<h2>Charts</h2>", "<div class='charts'>" + "".join(charts) + "</div>"]
    body += ["<h2>Checkpoint and lineage</h2>",
             _facts([("Unlearned model", html.escape(checkpoint or "not saved")),
                     ("Weights SHA-256", f"<code>{html.escape(sha256 or '–')}</code>")])]
    if lineage:
        chain = pd.DataFrame([{"run": f"#{r['run']}", "requested": r.get("created", ""),
                               "method": r.get("method", ""), "mode": r.get("mode", ""),
                               "instances": len(r.get("instances", [])), "ticket": r.get("reason") or "–",
                               "from": str(r.get("model_sha256") or "–")[:16],
                               "to": str(r.get("result_sha256") or "–")[:16]} for r in lineage])
        body += ["<p class='note'>From the first original model to this one (weights hashes, first 16 "
                 "hex digits):</p>", _table(chain)]
    body += ["<h2>What the scores mean</h2>", f"<ul class='note'>{definitions}</ul>"]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
