"""AppTests of the Unlearn, Interference, Compare and History pages on the default sample model."""

from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from app.charts import config_fields, history_frame, loss_curves_figure, subspace_ranks_frame
from core.checkpoints import SAMPLE_MODELS_DIR
from core.evaluation.tuning import tuned_config, tuned_settings
from core.unlearning import get_unlearner

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _app(**state) -> AppTest:
    app = AppTest.from_file(MAIN, default_timeout=900)
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def _button(app, label):
    return next(b for b in app.button if b.label == label)


def test_config_fields_follow_the_dataclass():
    fields = {f["name"]: f for f in config_fields(get_unlearner("interference_aware").config_class)}
    assert fields["lr"]["kind"] == "float" and fields["lr"]["low"] == 1e-7
    assert fields["optimizer"]["choices"] == ("adam", "sgd")
    assert fields["conflict_only"]["kind"] == "bool"


def test_history_and_ranks_frames():
    history = [{"step": 1, "forget/depth": 2.0, "retain/depth": 1.0}, {"step": 2, "forget/depth": 3.0}]
    frame = history_frame(history)
    assert list(frame["kind"]) == ["forget", "retain", "forget"] and list(frame["loss"]) == [2.0, 1.0, 3.0]
    assert len(loss_curves_figure(history).data) == 2
    ranks = {"encoder.0": {"input": {"retain": 3, "union": 5}, "output": {"depth": 2, "union": 2}}}
    assert subspace_ranks_frame(ranks).to_dict("list") == {
        "layer": ["encoder.0", "encoder.0"], "side": ["input", "output"], "rank": [5, 2]}


@pytest.mark.parametrize("page", ["unlearn", "compare"])
def test_pages_ask_for_a_selection_first(page):
    app = _app()
    app.switch_page(f"pages/{page}.py").run()
    assert not app.exception
    assert "Select page" in app.warning[0].value


def test_unlearn_then_interference_and_history():
    app = _app(selection=[3, 17, 42], target_tasks=["depth"])
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    assert "Partial-task unlearning of 3 instances: forget depth" in app.markdown[0].value
    app.selectbox(key="method").set_value("grad_ascent").run()
    _button(app, "Preview interference").click().run()
    assert not app.exception and len(app.get("plotly_chart")) >= 1
    app.number_input(key="cfg_grad_ascent_partial_steps").set_value(2)
    _button(app, "Run").click().run()
    assert not app.exception
    assert "Run #L1 (grad_ascent, partial-task, 3 instances): finished" in app.success[0].value
    # the verdict of the run, once it ended, in one sentence (issue 19), with its report
    assert app.info[0].value.startswith("**Verdict.** grad_ascent forgot 3 training instances (ids 3, 17, "
                                        "42) on depth only, keeping segmentation and normal: on those images "
                                        "depth's")
    assert [m.label for m in app.metric] == ["UIS v2", "UIS (v1)", "MIA AUC"]
    assert len(app.get("download_button")) == 2  # the report, the unlearned model as a zip
    from core.checkpoints import load_checkpoint
    from core.ledger import Ledger

    (row,) = Ledger().runs()
    unlearned, card = load_checkpoint(row["result_path"])  # saved beside the ledger, loads
    assert row["status"] == "done" and row["source"] == "dashboard" and row["method"] == "grad_ascent"
    assert card.request["extras"]["ledger_run"] == row["run"] == 1
    assert len(Ledger().steps(row["run"])) == 2

    app.switch_page("pages/interference.py").run()
    assert not app.exception
    (run,) = app.session_state["runs"]  # read back from the ledger and the saved checkpoint
    assert run.id == "L1" and run.method == "grad_ascent" and run.config["steps"] == 2
    assert len(run.history) == 2 and run.checkpoint == row["result_path"]
    assert len(app.get("plotly_chart")) == 3  # shifts, the UIS breakdown and the losses per step
    tiles = {m.label: m for m in app.metric}
    assert set(tiles) >= {"UIS v2", "UIS (v1)", "ILI", "TLI", "MIA AUC"}
    assert tiles["UIS v2"].delta.endswith("vs original") and tiles["ILI"].delta.endswith("vs original")
    app.radio(key="interference_view").set_value("Conflicts").run()
    assert not app.exception and len(app.get("plotly_chart")) == 2  # overall and per layer
    app.radio(key="interference_view").set_value("Instances").run()
    assert not app.exception and not app.get("plotly_chart")
    assert len(app.dataframe) == 3 and app.image  # scores, per task and split, at-risk; thumbnails

    app.switch_page("pages/history.py").run()
    assert not app.exception
    recorded, table = app.dataframe[0].value, app.dataframe[1].value
    assert recorded["status"].tolist() == ["done"] and recorded["from"].tolist() == ["dashboard"]
    assert table["method"].tolist() == ["grad_ascent"] and (table["UIS v2"] != "–").all()


def test_config_form_enforces_the_knob_ranges():
    app = _app(selection=[3])
    app.switch_page("pages/unlearn.py").run()
    app.selectbox(key="method").set_value("interference_aware").run()
    steps, alpha = app.number_input(key="cfg_interference_aware_full_steps"), app.number_input(
        key="cfg_interference_aware_full_alpha")
    tuned = tuned_config(tuned_settings(SAMPLE_MODELS_DIR / "synthetic-indoor"), "full", "interference_aware")
    assert (steps.min, steps.max, steps.value) == (1, 100_000, (tuned or {}).get("steps", 25))
    assert (alpha.min, alpha.max) == (0.0, 1.0)
    assert app.selectbox(key="cfg_interference_aware_full_optimizer").options == ["adam", "sgd"]


@pytest.mark.slow
def test_compare_two_methods():
    app = _app(selection=[3, 17])
    app.switch_page("pages/compare.py").run()
    app.multiselect(key="compare_methods").set_value(["grad_ascent", "ssd"]).run()
    _button(app, "Run the comparison").click().run()
    assert not app.exception
    board = app.dataframe[0].value  # the runs went through the queue (here run at once) and the ledger
    assert set(board["model"]) == {"original (before unlearning)", "grad_ascent", "ssd"}
    assert len(app.get("plotly_chart")) == 4
    # both runs are in the ledger (History and every session find them), their models stored
    from core.checkpoints import load_checkpoint
    from core.ledger import Ledger

    rows = Ledger().runs()
    assert sorted(r["method"] for r in rows) == ["grad_ascent", "ssd"]
    assert {r["status"] for r in rows} == {"done"} and {r["reason"] for r in rows} == {"Compare page"}
    assert len({r["request"] for r in rows}) == 1  # one request, a run per method
    for row in rows:
        assert Path(row["result_path"]).parent == Ledger().results_folder()
        assert load_checkpoint(row["result_path"])


def test_two_sessions_on_one_model_and_one_ledger():
    """Two people at once: both runs are recorded, each session finds its own, neither changes
    the shared original."""
    from core.checkpoints import load_sample
    from core.ledger import Ledger

    original = {k: v.clone() for k, v in load_sample("synthetic-indoor")[0].state_dict().items()}
    sessions = [_app(selection=ids, target_tasks=tasks) for ids, tasks in (
        ([3, 17], ["depth"]), ([5], ["segmentation", "depth", "normal"]))]
    for app in sessions:
        app.switch_page("pages/unlearn.py").run()
        app.selectbox(key="method").set_value("grad_ascent").run()
        app.number_input(key=next(n.key for n in app.number_input if n.key.endswith("_steps"))).set_value(2)
        _button(app, "Run").click().run()
        assert not app.exception
    rows = Ledger().runs()
    assert [r["status"] for r in rows] == ["done", "done"] and {r["source"] for r in rows} == {"dashboard"}
    assert sorted(len(r["instances"]) for r in rows) == [1, 2]
    assert {r["mode"] for r in rows} == {"partial", "full"}
    model, _ = load_sample("synthetic-indoor")
    assert all(torch.equal(v, original[k]) for k, v in model.state_dict().items())


def test_runs_on_the_same_weights_are_listed_whatever_path_recorded_them(street_copy):
    """Issue 19, defect 3: a run the Compare page recorded (NAME) and one the worker recorded
    (NAME.safetensors) are both runs on this model, and so on a copy of the same weights."""
    from core.checkpoints import load_checkpoint
    from core.jobs import submit
    from core.ledger import Ledger
    from core.requests import ForgetRequest
    from core.unlearning.runner import run_request

    street = SAMPLE_MODELS_DIR / "synthetic-street"
    model, card = load_checkpoint(street)
    ledger = Ledger()
    run_request(model, card, str(street), [1, 2], None, "grad_ascent", {"steps": 1}, ledger.results_folder(),
                ledger=ledger, source="dashboard", reason="Compare page", store=True)
    request = ForgetRequest.build([1, 2], None, card.train_ids, ["segmentation", "depth"])
    submit(ledger, f"{street}.safetensors", card, request, "grad_ascent", {"steps": 1, "seed": 3})
    app = _app(model_source="Path on this machine", model_typed_path=str(street_copy), selection=[1, 2])
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    assert [s.value.split(":")[0] for s in app.success] == [
        "Run #L2 (grad_ascent, full-task, 2 instances)", "Run #L1 (grad_ascent, full-task, 2 instances)"]
    app.switch_page("pages/explain.py").run()
    options = app.selectbox(key="explain_run").options
    assert not app.exception and [o.split()[0] for o in options] == ["#L2", "#L1"]
