"""Shared set-up of the dashboard's AppTests: a finished run on the street sample model in the
ledger, and the Interference page opened on it."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


@pytest.fixture()
def street_run(mtu_home):
    """A done grad_ascent run (2 steps) forgetting instances 1, 2 and 3 of the street sample on
    every task, recorded by the dashboard in the ledger; returns its ledger row."""
    from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
    from core.ledger import Ledger
    from core.unlearning.runner import run_request

    model, card = load_checkpoint(SAMPLE_MODELS_DIR / "synthetic-street")
    ledger = Ledger()
    run_request(model, card, SAMPLE_MODELS_DIR / "synthetic-street", [1, 2, 3], None, "grad_ascent",
                {"steps": 2}, ledger.results_folder(), ledger=ledger, source="dashboard", store=True)
    return ledger.runs()[0]


@pytest.fixture()
def interference_page():
    """Opens the Interference page on the street sample's latest run, in a new session; with
    `view`, switched to that view."""
    def open_page(view: str | None = None) -> AppTest:
        app = AppTest.from_file(MAIN, default_timeout=900)
        app.session_state["model_name"] = "synthetic-street"
        app.run()
        app.switch_page("pages/interference.py").run()
        assert not app.exception
        if view is not None:
            app.radio(key="interference_view").set_value(view).run()
            assert not app.exception, app.exception
        return app

    return open_page
