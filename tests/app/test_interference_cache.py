"""The Interference page keeps each run's scores beside the ledger (JSON, by the result's hash):
the first visit computes them under a status, any later visit (another session) reads them back."""

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

import app.state
from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
from core.ledger import Ledger
from core.unlearning.runner import run_request

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _interference() -> AppTest:
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.session_state["model_name"] = "synthetic-street"
    app.run()
    app.switch_page("pages/interference.py").run()
    assert not app.exception
    return app


def test_a_runs_scores_are_cached_beside_the_ledger_and_read_back(mtu_home, monkeypatch):
    """Issue 19, defect 7: the first visit re-scored the run with a blank page; every visit did."""
    model, card = load_checkpoint(SAMPLE_MODELS_DIR / "synthetic-street")
    ledger = Ledger()
    run_request(model, card, SAMPLE_MODELS_DIR / "synthetic-street", [1, 2, 3], None, "grad_ascent",
                {"steps": 1}, ledger.results_folder(), ledger=ledger, source="dashboard", store=True)
    (row,) = ledger.runs()
    calls = []

    def counted(name):
        scoring = getattr(app.state, name)
        return lambda *args, **kwargs: calls.append(name) or scoring(*args, **kwargs)

    for name in ("compare_models", "analyze_conflicts"):
        monkeypatch.setattr(app.state, name, counted(name))

    first = _interference()
    assert calls == ["compare_models", "analyze_conflicts"]
    assert [s.state for s in first.status] == ["complete"] and "Scored run #L1" in first.status[0].label
    cache = mtu_home / "scores" / f"{row['result_sha256']}.json"
    stored = json.loads(cache.read_text())
    assert stored["inputs"]["result"] == row["result_sha256"] and stored["inputs"]["oracle"] is None

    second = _interference()  # another session: read back, not scored again
    assert calls == ["compare_models", "analyze_conflicts"] and not second.status
    assert {m.label: m.value for m in second.metric} == {m.label: m.value for m in first.metric}
    assert len(second.get("plotly_chart")) == 3  # shifts, UIS breakdown, losses per step
    assert second.dataframe[0].value.equals(first.dataframe[0].value)
    for view in ("Conflicts", "Instances"):  # the conflict analysis read back draws as computed
        second.radio(key="interference_view").set_value(view).run()
        first.radio(key="interference_view").set_value(view).run()
        assert not second.exception and len(second.get("plotly_chart")) == len(first.get("plotly_chart"))
    assert second.dataframe[2].value.equals(first.dataframe[2].value)  # the at-risk instances

    cache.write_text("{not json")  # a damaged cache is scored again and rewritten, not an error
    third = _interference()
    assert calls.count("compare_models") == 2 and not third.error and json.loads(cache.read_text())
