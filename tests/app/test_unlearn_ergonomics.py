"""Issue 19, ergonomics of the Unlearn page: method, reason, oracle and Run first, the knobs in an
"Advanced" expander shown rounded (what runs is the exact value); the loss curves stay after the
run ended; the tail after the last step says what it is doing."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.forms import shown_format
from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
from core.evaluation.tuning import tuned_config, tuned_settings
from core.ledger import Ledger
from core.requests import ForgetRequest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
WIDGETS = ("selectbox", "text_input", "checkbox", "button", "number_input", "multiselect")


def _unlearn(**state) -> AppTest:
    app = AppTest.from_file(MAIN, default_timeout=900)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    return app


def test_shown_format_rounds_to_three_significant_digits():
    assert shown_format(0.00019285) == "%.2e"  # the browser shows 1.93e-4 (sprintf.js)
    assert shown_format(0.00019285) % 0.00019285 == "1.93e-04"
    assert [shown_format(v) % v for v in (0.6628489111883568, 0.05, 25.0, 1234.5, 5e5)] == [
        "0.663", "0.0500", "25.0", "1234", "5.00e+05"]
    assert shown_format(0.0) == "%g"  # nothing to round: a value typed there shows whole


def test_method_reason_oracle_and_run_come_first_and_the_knobs_are_advanced():
    app = _unlearn(selection=[3, 17])
    labels = [node.label for node in app.main if getattr(node, "type", None) in WIDGETS]
    assert labels[0] == "Method" and labels[1] == "Reason (kept in the ledger)"
    assert labels[2].startswith("Also train the retrain oracle") and labels[3] == "Run"
    (advanced,) = [e for e in app.expander if e.label.startswith("Advanced")]
    # ours has no tuned start on the sample model (its studies tuned the first version): defaults
    entry = tuned_settings(SAMPLE_MODELS_DIR / "synthetic-indoor")
    assert tuned_config(entry, "full", "interference_aware") is None
    lr, alpha = (advanced.number_input(key=f"cfg_interference_aware_full_{name}") for name in ("lr", "alpha"))
    assert lr.value == 4e-4 and lr.proto.format == "%.2e"  # shown 4.00e-4, runs exactly
    assert alpha.value == 0.3 and alpha.proto.format == "%.3f"
    assert advanced.number_input(key="cfg_interference_aware_full_steps").proto.format == "%d"
    assert any("defaults (untuned)" in c.value for c in advanced.caption)  # where the knobs start from


def test_what_runs_is_the_exact_value_not_the_rounded_one():
    app = _unlearn(selection=[3, 17])
    app.selectbox(key="method").set_value("grad_ascent").run()
    exact = tuned_config(tuned_settings(SAMPLE_MODELS_DIR / "synthetic-indoor"), "full", "grad_ascent")["lr"]
    assert app.number_input(key="cfg_grad_ascent_full_lr").proto.format == "%.2e"
    app.number_input(key="cfg_grad_ascent_full_steps").set_value(1)
    next(b for b in app.button if b.label == "Run").click().run()
    assert not app.exception
    (row,) = Ledger().runs()
    assert row["config"]["lr"] == exact and row["config"]["steps"] == 1
    # the losses per step stay on the page once the run ended, and History shows them too
    assert "finished" in app.success[0].value
    assert [c.key for c in app.get("plotly_chart")] == [f"curves_{row['run']}"]
    app.switch_page("pages/history.py").run()
    assert not app.exception and [c.key for c in app.get("plotly_chart")] == ["history_losses"]


def _running(total: int, done: int) -> int:
    """A run of the ledger that is running on the street sample model, `done` of `total` steps
    logged."""
    ledger = Ledger()
    path = SAMPLE_MODELS_DIR / "synthetic-street"
    _, card = load_checkpoint(path)
    request = ForgetRequest.build([1, 2], None, card.train_ids, ["segmentation", "depth"])
    model = ledger.add_model(f"{path}.safetensors", card)
    run = ledger.add_run(ledger.add_request(model, request, "dashboard"), "grad_ascent", {"steps": total},
                         status="queued")
    ledger.start_run(run)
    for step in range(1, done + 1):
        ledger.log_step(run, {"step": step, "forget/depth": 1.0 / step, "retain/depth": 0.5, "total": total})
    return run


def test_the_tail_after_the_last_step_says_evaluating_and_saving():
    _running(total=3, done=2)
    app = _unlearn(model_name="synthetic-street")
    (bar,) = app.get("progress")
    assert bar.proto.text.endswith("step 2 / 3")
    _running(total=3, done=3)
    app = _unlearn(model_name="synthetic-street")
    first, _ = app.get("progress")  # the newest run first
    assert first.proto.text.endswith("step 3 / 3: evaluating the unlearned model and saving it")


def test_the_oracle_box_says_when_the_requests_recorded_oracle_is_reused():
    """One oracle per request content: when the ledger records a retrain oracle for the same
    weights, instances, tasks and data (queued, running or done), the oracle box names that run
    and says it is not trained again, instead of promising a training time."""
    ledger = Ledger()
    path = SAMPLE_MODELS_DIR / "synthetic-indoor"
    _, card = load_checkpoint(path)
    app = _unlearn(selection=[3, 17])
    assert app.checkbox(key="with_oracle").label.startswith("Also train the retrain oracle (")
    request = ForgetRequest.build([17, 3], None, card.train_ids, [t["name"] for t in card.tasks])
    model = ledger.add_model(f"{path}.safetensors", card)
    oracle = ledger.add_run(ledger.add_request(model, request, "cli"), "retrain", {}, status="queued")
    app = _unlearn(selection=[3, 17])
    box = app.checkbox(key="with_oracle")
    assert box.label == f"Use this request's retrain oracle, run #L{oracle} (queued): it is not trained again"
    assert "about" not in box.label and "one oracle per request content" in box.proto.help.lower()
    ledger.start_run(oracle)
    ledger.finish_run(oracle, [], card.weights_sha256, f"{path}.safetensors")
    assert "(done): it is not trained again" in _unlearn(selection=[3, 17]).checkbox(key="with_oracle").label
    other = _unlearn(selection=[3, 18])  # other instances: no oracle yet
    assert other.checkbox(key="with_oracle").label.startswith("Also train the retrain oracle (")
