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
    app = AppTest.from_file(MAIN, default_timeout=900)
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
    # screening (issue 21 part 5): each run's ledger id and its settings beside its scores
    settings = dict(zip(board["model"], board["settings"]))
    assert settings["grad_ascent"].startswith("steps=2") and settings["ssd"] == "defaults"
    assert settings["original (before unlearning)"] == "–"
    assert set(board["run"]) - {"–"} == {f"#L{r['run']}" for r in Ledger().runs()}
    assert [s.label for s in reloaded.status] == ["Scored the comparison"]
    assert len(reloaded.get("plotly_chart")) == 4
    again = _compare(model_name="synthetic-street")  # read back from beside the ledger, not scored again
    assert not again.status and again.dataframe[0].value.equals(board)

    # issue 21 part 5: from the leaderboard to the Contrast page, the two best runs as A and B
    best = [m for m in board["model"] if m in ("grad_ascent", "ssd")]
    ids = {r["method"]: f"L{r['run']}" for r in Ledger().runs()}
    next(b for b in again.button if b.label.startswith("Contrast the two best runs")).click().run()
    assert not again.exception, again.exception
    assert [t.value for t in again.title] == ["Contrast"]
    assert (again.selectbox(key="contrast_a").value, again.selectbox(key="contrast_b").value) == \
        (ids[best[0]], ids[best[1]])


def _recorded_oracle(instances, tasks=None) -> int:
    """A done retrain run on the street sample, recorded by another request (the CLI's) with the
    content `instances`, `tasks`; one step of grad_ascent stands in for the oracle's result."""
    from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint, read_card
    from core.unlearning.runner import run_request

    street = SAMPLE_MODELS_DIR / "synthetic-street"
    model, card = load_checkpoint(street)
    ledger = Ledger()
    result, weights, _ = run_request(model, card, street, instances, tasks, "grad_ascent", {"steps": 1},
                                     ledger.results_folder() / "oracle", store=True)
    sha = ledger.add_model(street, card)
    run = ledger.add_run(ledger.add_request(sha, result.request, "cli", "TICKET-3", model_path=street),
                         "retrain", {})
    ledger.finish_run(run, [], read_card(weights).weights_sha256, weights)
    return run


def test_compare_reuses_the_oracle_the_ledger_records_for_the_request(monkeypatch):
    """Issue 19: one oracle per request content. A comparison of a request whose oracle another
    request trained queues no retrain run even with retrain picked, and its leaderboard is
    referenced to that oracle; another request's comparison does not get it."""
    queued: list[dict] = []
    monkeypatch.setattr(jobs, "queue", lambda home=None: (None, queued.append))
    monkeypatch.setattr(core.evaluation.tuning, "tuned_config", lambda *_, **__: {"steps": 1})
    oracle = _recorded_oracle([3, 17])
    app = _compare(model_name="synthetic-street", selection=[3, 17])
    app.multiselect(key="compare_methods").set_value(["retrain", "grad_ascent"]).run()
    assert any(f"is run #L{oracle} (done)" in c.value and "not trained again" in c.value for c in app.caption)
    next(b for b in app.button if b.label == "Run the comparison").click().run()
    assert not app.exception
    assert [job["method"] for job in queued] == ["grad_ascent"]  # the oracle is not trained again
    for job in queued:
        jobs.execute(job)
    board = _compare(model_name="synthetic-street").dataframe[0].value
    assert set(board["model"]) == {"original (before unlearning)", "grad_ascent", "retrain oracle"}

    queued.clear()  # another request: no oracle of its own, none borrowed
    other = _compare(model_name="synthetic-street", selection=[3, 18])
    other.multiselect(key="compare_methods").set_value(["grad_ascent"]).run()
    assert not any("retrain oracle of this request" in c.value for c in other.caption)
    next(b for b in other.button if b.label == "Run the comparison").click().run()
    for job in queued:
        jobs.execute(job)
    board = _compare(model_name="synthetic-street").dataframe[0].value
    assert set(board["model"]) == {"original (before unlearning)", "grad_ascent"}


def test_a_runs_result_uses_the_oracle_of_its_request_content():
    """Unlearn's verdict, Interference and the report read a run's oracle by its request's
    content (model, instances, tasks, data), so an oracle another request trained serves it."""
    from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
    from core.unlearning.runner import run_request

    street = SAMPLE_MODELS_DIR / "synthetic-street"
    model, card = load_checkpoint(street)
    ledger = Ledger()
    for instances in ([1, 2, 3], [1, 2, 4]):
        run_request(model, card, street, instances, None, "grad_ascent", {"steps": 1},
                    ledger.results_folder(), ledger=ledger, source="dashboard", store=True)
    _recorded_oracle([3, 2, 1])
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.session_state["model_name"] = "synthetic-street"
    app.run()
    app.switch_page("pages/interference.py").run()
    assert not app.exception  # the newest run, of [1, 2, 4]: no oracle of that content
    assert list(app.dataframe[0].value["model"]) == ["original (before unlearning)", "grad_ascent"]
    app.selectbox(key="run_picker").set_value("L1").run()  # the run of [1, 2, 3]
    assert not app.exception
    assert list(app.dataframe[0].value["model"]) == ["original (before unlearning)", "grad_ascent",
                                                     "retrain oracle"]
