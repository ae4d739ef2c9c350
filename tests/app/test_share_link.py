"""Issue 19, ergonomics: the run and the view are URL query parameters, so a result can be shared.
A link ?run=L1&view=conflicts opens that run (and its model) on the Interference page; the pages
write them when a run or a view is chosen; a bad value is a message, never a crash."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
from core.ledger import Ledger
from core.unlearning.runner import run_request

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _open(**params) -> AppTest:
    """A new session opening the dashboard's address with `params` as its query string."""
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.query_params.update(params)
    return app.run()


def _warnings(app) -> str:
    return " ".join(w.value for w in app.warning)


def test_a_link_opens_its_run_and_view_and_the_pages_write_them():
    street = SAMPLE_MODELS_DIR / "synthetic-street"
    model, card = load_checkpoint(street)
    ledger = Ledger()
    run_request(model, card, street, [1, 2, 3], None, "grad_ascent", {"steps": 1}, ledger.results_folder(),
                ledger=ledger, source="dashboard", store=True)

    app = _open(run="L1", view="conflicts")  # a new session: the indoor sample model is loaded
    assert not app.exception and not app.warning
    assert app.title[0].value == "Interference"
    assert app.session_state["model_path"] == str(street)  # the run's model, opened for it
    assert app.selectbox(key="run_picker").value == "L1"
    assert app.radio(key="interference_view").value == "Conflicts"
    assert app.query_params == {"run": "L1", "view": "conflicts"}
    app.radio(key="interference_view").set_value("Instances").run()
    assert app.query_params == {"run": "L1", "view": "instances"}
    app.switch_page("pages/history.py").run()  # (a browser's page switch also clears the view)
    assert not app.exception and app.query_params["run"] == "L1"

    app = _open(run="L1", view="sideways")
    assert not app.exception and app.radio(key="interference_view").value == "Shifts and UIS"
    assert "view 'sideways'" in _warnings(app) and "conflicts" in _warnings(app)
    assert app.query_params == {"run": "L1", "view": "shifts"}

    app = _open(run="L7")
    assert not app.exception and app.title[0].value == "Interference"
    assert "run 'L7'" in _warnings(app) and "History" in _warnings(app)


def test_a_link_to_nothing_is_a_message():
    for value in ("L1", "drop table", ""):
        app = _open(run=value)
        assert not app.exception and f"run '{value}'" in _warnings(app)
        assert "No run yet" in app.info[0].value
