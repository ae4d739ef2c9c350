"""The Unlearn form and the Compare page start each method from the settings tuned for the
request's mode (tuned.json beside the model), and say so; methods without them say "defaults"."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app.forms import tuned_note
from core.checkpoints import SAMPLE_MODELS_DIR

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
TUNED = {"command": "mtu tune --model indoor --trials 4", "date": "2026-12-01", "trials": 4, "seed": 0,
         "modes": {"partial": {"interference_aware": {"lr": 0.002, "steps": 7, "alpha": 0.6,
                                                      "match": "quantiles"},
                               "grad_ascent": {"lr": 3e-5, "steps": 2}},
                   "full": {"interference_aware": {"lr": 1e-4, "steps": 9}}}}


def _model_with_tuned_settings(folder: Path) -> Path:
    for suffix in (".json", ".safetensors"):
        source = SAMPLE_MODELS_DIR / f"synthetic-indoor{suffix}"
        (folder / f"indoor{suffix}").write_bytes(source.read_bytes())
    (folder / "tuned.json").write_text(json.dumps({"indoor": TUNED}))
    return folder / "indoor"


def _captions(app) -> str:
    return " ".join(c.value for c in app.caption)


def test_the_note_names_tuned_and_untuned_methods():
    note = tuned_note(TUNED, "partial", ["interference_aware", "salun"])
    assert "interference_aware starts from the settings tuned for partial-task unlearning" in note
    assert "4 trials" in note and "`mtu tune --model indoor --trials 4`" in note and "never on test" in note
    assert "salun: no tuned settings" in note and "defaults" in note
    assert "no tuned settings" in tuned_note(None, "full", ["ssd"])


def test_the_unlearn_form_starts_from_the_tuned_settings_of_the_mode(tmp_path):
    model = _model_with_tuned_settings(tmp_path)
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.session_state["model_source"] = "Path on this machine"
    app.session_state["model_typed_path"] = str(model)
    app.session_state["selection"] = [3, 17]
    app.session_state["target_tasks"] = ["depth"]
    app.run()
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    assert app.number_input(key="cfg_interference_aware_partial_steps").value == 7
    assert app.number_input(key="cfg_interference_aware_partial_lr").value == 0.002
    assert app.number_input(key="cfg_interference_aware_partial_alpha").value == 0.6
    assert app.selectbox(key="cfg_interference_aware_partial_match").value == "quantiles"
    # knobs the tuning did not search keep their defaults
    assert app.number_input(key="cfg_interference_aware_partial_eps_in").value == 0.95
    assert "tuned for partial-task unlearning of this model" in _captions(app)
    assert "mtu tune --model indoor --trials 4" in _captions(app)
    app.selectbox(key="method").set_value("salun").run()
    assert not app.exception
    assert app.number_input(key="cfg_salun_partial_steps").value == 30
    assert "salun: no tuned settings for partial-task unlearning" in _captions(app)
    # the same method in the other mode starts from that mode's settings
    app.session_state["target_tasks"] = ["segmentation", "depth", "normal"]
    app.selectbox(key="method").set_value("interference_aware").run()
    assert not app.exception
    assert app.number_input(key="cfg_interference_aware_full_steps").value == 9


@pytest.mark.slow
def test_the_compare_page_runs_the_tuned_settings(tmp_path):
    model = _model_with_tuned_settings(tmp_path)
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.session_state["model_source"] = "Path on this machine"
    app.session_state["model_typed_path"] = str(model)
    app.session_state["selection"] = [3]
    app.session_state["target_tasks"] = ["depth"]
    app.run()
    app.switch_page("pages/compare.py").run()
    app.multiselect(key="compare_methods").set_value(["grad_ascent", "ssd"]).run()
    assert "grad_ascent starts from the settings tuned" in _captions(app)
    assert "ssd: no tuned settings" in _captions(app)
    next(b for b in app.button if b.label == "Run the comparison").click().run()
    assert not app.exception
    from core.ledger import Ledger

    runs = {row["method"]: row for row in Ledger().runs()}  # queued to the worker, recorded
    assert runs["grad_ascent"]["config"]["steps"] == 2 and runs["grad_ascent"]["config"]["lr"] == 3e-5
    assert runs["ssd"]["config"]["steps"] == 10  # its default
