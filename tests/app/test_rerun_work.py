"""Issue 19, speed: a rerun on cached data (a page switch, a click) builds no figure or table it
built before. Counted calls, no timings: the browser test measures the seconds."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import app.charts
from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
from core.ledger import Ledger

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
STREET = SAMPLE_MODELS_DIR / "synthetic-street"
BUILT = {"interference": ("person_table", "split_table"), "history": ("loss_curves_figure",),
         "model": ("primary_metric_chart",), "select": ("instance_scatter",)}


@pytest.fixture()
def built(monkeypatch) -> dict[str, int]:
    """How many times each figure or table of `BUILT` was built."""
    calls: dict[str, int] = {}

    def counted(name: str):
        build = getattr(app.charts, name)

        def count(*args, **kwargs):
            calls[name] = calls.get(name, 0) + 1
            return build(*args, **kwargs)
        return count

    for name in {name for names in BUILT.values() for name in names} | {"comparison_figures",
                                                                        "comparison_report"}:
        monkeypatch.setattr(app.charts, name, counted(name))
    return calls


@pytest.mark.parametrize("page", list(BUILT))
def test_a_rerun_on_cached_data_builds_no_figure_or_table_again(page, built, street_run):
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.session_state["model_name"] = "synthetic-street"
    app.session_state["selection"] = [1, 2, 3]
    app.run()
    app.switch_page(f"pages/{page}.py").run()
    assert not app.exception
    first = {name: built.get(name, 0) for name in BUILT[page]}  # 0 when a cache shared by sessions has them
    assert app.get("plotly_chart") or app.dataframe  # the page drew them
    app.switch_page("pages/explain.py").run()
    for _ in range(2):  # back to the page, and a rerun of it
        app.switch_page(f"pages/{page}.py").run()
    assert not app.exception
    assert {name: built.get(name, 0) for name in BUILT[page]} == first


def test_a_finished_comparison_draws_its_charts_once_and_writes_its_report_on_a_click(built):
    """The Compare page built its four charts and its report (several MB, plotly.js inlined) on
    every rerun, with no status while it did."""
    from app.state import COMPARE_REASON
    from core.jobs import submit
    from core.requests import ForgetRequest

    _, card = load_checkpoint(STREET)
    request = ForgetRequest.build([1, 2, 3], None, card.train_ids, [t["name"] for t in card.tasks])
    submit(Ledger(), STREET, card, request, "grad_ascent", {"steps": 1, "device": "cpu"},
           reason=COMPARE_REASON)
    dashboard = AppTest.from_file(MAIN, default_timeout=900)
    dashboard.session_state["model_name"] = "synthetic-street"
    dashboard.run()
    dashboard.switch_page("pages/compare.py").run()
    assert not dashboard.exception and len(dashboard.get("plotly_chart")) == 4
    drawn = {name: built.get(name, 0) for name in ("comparison_figures", "comparison_report")}
    assert drawn == {"comparison_figures": 1, "comparison_report": 0}  # the report: once clicked
    dashboard.switch_page("pages/explain.py").run()
    dashboard.switch_page("pages/compare.py").run()
    dashboard.run()
    assert not dashboard.exception and len(dashboard.get("plotly_chart")) == 4
    assert {name: built.get(name, 0) for name in drawn} == drawn


def test_packing_the_unlearned_model_for_its_download_shows_a_spinner(monkeypatch, street_run):
    """No blank wait without a status: the Interference page hashes and zips the unlearned model
    (seconds for a large one) under a spinner, once per run."""
    import streamlit

    shown: list[str] = []
    spinner = streamlit.spinner

    def recorded(text: str = "", *args, **kwargs):
        shown.append(text)
        return spinner(text, *args, **kwargs)

    monkeypatch.setattr(streamlit, "spinner", recorded)
    dashboard = AppTest.from_file(MAIN, default_timeout=900)
    dashboard.session_state["model_name"] = "synthetic-street"
    dashboard.run()
    dashboard.switch_page("pages/interference.py").run()
    assert not dashboard.exception
    assert [text for text in shown if "unlearned model" in text] == [
        "Packing the unlearned model for its download..."]
    dashboard.run()
    assert [text for text in shown if "unlearned model" in text] == [
        "Packing the unlearned model for its download..."]
