"""Issue 19, defect 5: Compare ran its methods inside the page script, so leaving the page
abandoned the comparison. Its runs now go to the worker's queue like the Unlearn page's, and the
leaderboard is rebuilt from the ledger by any later visit or session."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

import core.evaluation.tuning
from core import jobs
from core.ledger import Ledger

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _compare(**state) -> AppTest:
    app = AppTest.from_file(MAIN, default_timeout=300)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    app.switch_page("pages/compare.py").run()
    assert not app.exception
    return app


def test_compare_queues_its_runs_and_rebuilds_the_leaderboard_from_the_ledger(monkeypatch):
    queued: list[dict] = []
    monkeypatch.setattr(jobs, "queue", lambda home=None: (None, queued.append))  # a worker not yet running
    monkeypatch.setattr(core.evaluation.tuning, "tuned_config",
                        lambda entry, mode, method, tasks=None: None if method == "ssd" else {"steps": 2})
    app = _compare(model_name="synthetic-street", selection=[3, 17])
    app.multiselect(key="compare_methods").set_value(["grad_ascent", "ssd"]).run()
    next(b for b in app.button if b.label == "Run the comparison").click().run()
    assert not app.exception
    assert [job["method"] for job in queued] == ["grad_ascent", "ssd"]  # queued, nothing run by the page
    rows = Ledger().runs()
    assert {r["status"] for r in rows} == {"queued"} and len({r["request"] for r in rows}) == 1
    assert any("grad_ascent: queued, position 1" in i.value for i in app.info) and not app.dataframe
    assert [b.label for b in app.button].count("Cancel") == 2

    for job in queued:  # the worker runs them while the page is left
        jobs.execute(job)
    assert {r["status"] for r in Ledger().runs()} == {"done"}
    reloaded = _compare(model_name="synthetic-street")  # another session, no selection: from the ledger
    board = reloaded.dataframe[0].value
    assert set(board["model"]) == {"original (before unlearning)", "grad_ascent", "ssd"}
    assert "UIS v2" in board.columns and "uis2" not in board.columns
    assert [s.label for s in reloaded.status] == ["Scored the comparison"]
    assert len(reloaded.get("plotly_chart")) == 4
    again = _compare(model_name="synthetic-street")  # read back from beside the ledger, not scored again
    assert not again.status and again.dataframe[0].value.equals(board)
