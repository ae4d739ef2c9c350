"""The dashboard with an unlearning method of the user's own (examples/own_method), started as
`mtu app --plugin my_methods`: the Unlearn page lists it and builds its form from its config
dataclass, a run of it goes through the worker, and Compare lists it."""

import sys
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.ledger import Ledger
from core.unlearning.base import REGISTRY, unregister

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
EXAMPLE = ROOT / "examples" / "own_method"


@pytest.fixture(autouse=True)
def started_with_my_methods(monkeypatch):
    """As `mtu app --plugin my_methods` with the example's folder on PYTHONPATH; the method is
    not registered before the dashboard imports it, and is gone again afterwards."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.setenv("MTU_APP_PLUGINS", "my_methods")
    assert "fisher_forget" not in REGISTRY
    yield
    unregister("fisher_forget")
    sys.modules.pop("my_methods", None)


def _app(**state) -> AppTest:
    # a hang guard, not a speed test: a loaded host took over 180 s
    app = AppTest.from_file(MAIN, default_timeout=900)
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def test_the_unlearn_form_lists_the_method_and_runs_it(use_cache):
    app = _app(selection=[3, 17], target_tasks=["depth"])
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    method = app.selectbox(key="method")
    assert any(option.startswith("fisher_forget: Fisher-shaped noise") for option in method.options)
    method.set_value("fisher_forget").run()
    assert not app.exception
    alpha = app.number_input(key="cfg_fisher_forget_partial_alpha")
    assert alpha.value == 0.5 and "RMS" in alpha.help
    app.number_input(key="cfg_fisher_forget_partial_steps").set_value(1)
    app.number_input(key="cfg_fisher_forget_partial_retain_batch").set_value(4)
    app.number_input(key="cfg_fisher_forget_partial_fisher_batches").set_value(1)
    app.selectbox(key="cfg_fisher_forget_partial_device").set_value("cpu")
    next(b for b in app.button if b.label == "Run").click().run()  # queued; run at once in tests
    assert not app.exception and not app.error, [e.value for e in app.error]
    (row,) = Ledger().runs()
    assert row["method"] == "fisher_forget" and row["status"] == "done", row["error"]
    assert row["config"]["fisher_batches"] == 1


def test_compare_lists_the_method():
    app = _app(selection=[3, 17])
    app.switch_page("pages/compare.py").run()
    assert not app.exception
    assert "fisher_forget" in app.multiselect(key="compare_methods").options
