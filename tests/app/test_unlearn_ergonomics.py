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
    app = AppTest.from_file(MAIN, default_timeout=240)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    return app


def test_shown_format_rounds_to_three_significant_digits():
    assert shown_format(0.00019285) == "%.2e"  # the browser shows 1.93e-4 (sprintf.js)
    assert "%.2e" % 0.00019285 == "1.93e-04"
    assert [shown_format(v) % v for v in (0.6628489111883568, 0.05, 25.0, 1234.5, 5e5)] == [
        "0.663", "0.0500", "25.0", "1234", "5.00e+05"]
    assert shown_format(0.0) == "%g"  # nothing to round: a value typed there shows whole


def test_method_reason_oracle_and_run_come_first_and_the_knobs_are_advanced():
    app = _unlearn(selection=[3, 17])
    labels = [node.label for node in app.main if getattr(node, "type", None) in WIDGETS]
    assert labels[0] == "Method" and labels[1] == "Reason (kept in the ledger)"
    assert labels[2].startswith("Also train the retrain oracle") and labels[3] == "Run"
    (advanced,) = [e for e in app.expander if e.label.startswith("Advanced")]
    tuned = tuned_config(tuned_settings(SAMPLE_MODELS_DIR / "synthetic-indoor"), "full", "interference_aware")
    lr, alpha = (advanced.number_input(key=f"cfg_interference_aware_full_{name}") for name in ("lr", "alpha"))
    assert lr.value == tuned["lr"] and lr.proto.format == "%.2e"  # shown 5.23e-5, runs exactly
    assert alpha.value == tuned["alpha"] and alpha.proto.format == "%.3f"
    assert advanced.number_input(key="cfg_interference_aware_full_steps").proto.format == "%d"
    assert any("tuned" in c.value for c in advanced.caption)  # where the knobs start from


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
