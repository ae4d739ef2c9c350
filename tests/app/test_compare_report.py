"""The Compare page's charts and HTML report: real colours (one per model, the same in every chart,
the oracle grey) and room for the axis labels, even under Streamlit's Plotly template."""

import json
import math
import re

import pandas as pd
import streamlit  # noqa: F401  (as in the dashboard: Streamlit's placeholder template is Plotly's default)

from app.charts import ORACLE_COLOUR, comparison_figures, comparison_report, model_colour
from core.evaluation import Comparison

MODELS = ["original", "grad_ascent", "ssd", "retrain"]
TASKS = ["segmentation", "depth"]
PLACEHOLDER = re.compile(r"^#0000[0-3][0-9]$")  # Streamlit's CATEGORY_/SEQUENTIAL_/DIVERGING_ colours


def _comparison() -> Comparison:
    leaderboard = pd.DataFrame({"model": MODELS, "uis": [40.0, 12.0, 20.0, 5.0],
                                "forget_gap": [30.0, 8.0, 15.0, 0.0], "ili": [0.0, 3.0, 6.0, 1.0],
                                "tli": [math.nan, math.nan, math.nan, math.nan],
                                "seconds": [math.nan, 1.5, 2.0, 30.0]})
    breakdown = pd.DataFrame([{"model": m, "task": t, "test_half": 0.1, "forget_half": 0.2, "kept_half": 0.0}
                              for m in MODELS for t in TASKS])
    splits = ("forget", "retain", "test")
    scores = pd.DataFrame([{"model": m, "split": s, "task": t, "metric": "score", "value": 0.5,
                            "primary": True} for m in MODELS for s in splits for t in TASKS])
    return Comparison(leaderboard, breakdown, scores)


def _plots(page: str) -> list[dict]:
    """The {"data", "layout"} of every Plotly figure of an HTML page written by `html_page`."""
    decoder, plots = json.JSONDecoder(), []
    for match in re.finditer(r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*", page):
        data, end = decoder.raw_decode(page, match.end())
        layout, _ = decoder.raw_decode(page, page.index("{", end))
        plots.append({"data": data, "layout": layout})
    return plots


def _colours(tree) -> list[str]:
    if isinstance(tree, dict):
        return [c for value in tree.values() for c in _colours(value)]
    if isinstance(tree, list):
        return [c for value in tree for c in _colours(value)]
    return [tree] if isinstance(tree, str) and re.match(r"^(#[0-9a-fA-F]{3,8}|rgba?\()", tree) else []


def _trace_colours(figure: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for trace in figure["data"]:
        found.setdefault(trace.get("name"), set()).add(trace["marker"]["color"])
    return found


def test_the_exported_report_carries_real_colours_and_margins():
    """Issue 19, defect 4: the report's bars were black and its axis labels clipped."""
    figures = comparison_figures(_comparison())
    page = comparison_report(_comparison().leaderboard, figures, "2 instances")
    plots = _plots(page)
    assert len(plots) == 4
    for plot in plots:
        colours = _colours(plot)
        assert not [c for c in colours if PLACEHOLDER.match(c)], plot["layout"].get("title")
        traces = {c for names in _trace_colours(plot).values() for c in names}
        assert len(traces) > 1 and not traces & {"#000000", "black"}
        margin = plot["layout"]["margin"]
        assert min(margin["l"], margin["b"], margin["t"]) >= 60
        axes = [v for k, v in plot["layout"].items() if re.match(r"^[xy]axis\d*$", k)]
        assert axes and all(axis.get("automargin") for axis in axes)
        assert plot["layout"]["template"]["layout"]["paper_bgcolor"] == "white"


def test_one_model_has_one_colour_in_every_chart():
    figures = comparison_figures(_comparison())
    for title in ("Primary metric per split", "UIS (lower is better)",
                  "Which method interferes least: forget gap against interference"):
        colours = _trace_colours(json.loads(figures[title].to_json()))
        assert {name: colours[name] for name in MODELS} == {m: {model_colour(m)} for m in MODELS}
    assert model_colour("retrain") == ORACLE_COLOUR
    assert len({model_colour(m) for m in MODELS}) == len(MODELS)
    exported = _plots(comparison_report(_comparison().leaderboard, figures, ""))
    assert _trace_colours(exported[3])["grad_ascent"] == _trace_colours(exported[1])["grad_ascent"] == {
        model_colour("grad_ascent")}
