"""The one-page report of a run: a self-contained HTML page (plotly.js inlined, nothing fetched)
that prints to one A4 or Letter page (a print stylesheet: small type, two columns where the
content allows, the charts side by side and scaled down, tables and charts kept whole).

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
     padding:1.5em;font-size:14px;line-height:1.35}
h1{font-size:1.45em;margin:0 0 .15em}h2{font-size:1.05em;margin:.9em 0 .3em;border-bottom:1px solid #e5e7eb}
.sub{color:#4b5563;margin:0 0 .6em}
.verdict{background:#eff6ff;border-left:4px solid #2563eb;padding:.6em .9em;margin:.6em 0;font-size:1.05em}
.note{color:#4b5563;font-size:.9em;margin:.2em 0}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:0 1.6em}.cols>section{min-width:0}
.cols.wide{display:block}
table{border-collapse:collapse;margin:.2em 0;font-size:.92em}
td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #f3f4f6;vertical-align:top}
th{background:#f9fafb}
dl{display:grid;grid-template-columns:max-content 1fr;gap:1px 12px;margin:.2em 0}
dt{font-weight:600}dd{margin:0;min-width:0;overflow-wrap:anywhere}
.knobs{margin:.3em 0;font-size:.9em}.knobs span{display:inline-block;margin-right:.9em}
.charts{display:flex;flex-wrap:wrap;gap:8px}.chart{break-inside:avoid}
.defs{columns:2;column-gap:1.6em;margin:.2em 0;padding-left:1.1em}.defs li{break-inside:avoid}
code{font-size:.9em;overflow-wrap:anywhere}
@page{size:A4;margin:10mm}
@media print{
  body{max-width:none;padding:0;font-size:7.4px;line-height:1.25}
  h1{font-size:1.7em}h2{font-size:1.2em;margin:.55em 0 .2em;break-after:avoid}
  .verdict{padding:.35em .7em;margin:.4em 0;font-size:1.12em}
  td,th{padding:0 4px}
  .cols.wide{display:grid;grid-template-columns:3fr 2fr}
  .chart{zoom:.7}
  .defs{columns:3;font-size:.95em}
  table,dl,.chart,.verdict{break-inside:avoid}
  .verdict,th{-webkit-print-color-adjust:exact;print-color-adjust:exact}
  a{color:inherit;text-decoration:none}
}
"""

CHART_SIZE = {"width": 470, "height": 270}
"""Each chart's size in the report: two side by side on a screen, and (the print stylesheet
scales them by 0.7) on the printed page."""
CHART_MARGIN = {"l": 50, "r": 10, "t": 40, "b": 30}


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


def _knobs(config: Mapping[str, Any]) -> str:
    """A method's settings as one flowing paragraph of "name value" pairs (a method such as
    interference_aware has thirty of them)."""
    pairs = "".join(f"<span><b>{html.escape(str(k))}</b> {html.escape(str(v))}</span> "
                    for k, v in config.items())
    return f"<p class='knobs'>{pairs}</p>" if pairs else ""


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
    settings = [("Method", html.escape(method)), ("Time", f"{shown_number(seconds, 1)} s")]
    definitions = "".join(f"<li><b>{html.escape(label)}</b>: {html.escape(text)}</li>"
                          for label, text in KPIS.values())
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class='sub'>{html.escape(mode)} unlearning of {len(set(instances))} instances of "
            f"{html.escape(model)}</p>",
            f"<p class='verdict' id='verdict'>{html.escape(verdict)}</p>"]
    if oracle_note:
        body.append(f"<p class='note'>Retrain oracle: {html.escape(oracle_note)}.</p>")
    body += ["<div class='cols'><section><h2>Request</h2>", _facts(request), "</section>",
             "<section><h2>Method and settings</h2>", _facts(settings), _knobs(config), "</section></div>",
             "<h2>Scores</h2>", _table(person_table(leaderboard, approximate)),
             "<div class='cols wide'><section>",
             "<h2>Before, after and the retrain oracle, per task and split (primary metric)</h2>",
             _table(split_table(scores, method, approximate)), "</section><section>",
             "<h2>Membership attack</h2>",
             "<p class='note'>Can an attacker tell the forget images from images the model never saw, "
             "by their losses? AUC 0.5 = indistinguishable; the original's AUC is the starting point "
             "and the retrain oracle's the target.</p>",
             _table(mia_table(leaderboard, approximate)), "</section></div>"]
    charts, inlined = [], False
    for heading, figure in figures.items():
        shown = exported(figure).update_layout(title=heading, margin=CHART_MARGIN, **CHART_SIZE)
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
    body += ["<h2>What the scores mean</h2>", f"<ul class='note defs'>{definitions}</ul>"]
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
