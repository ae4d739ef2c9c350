"""What a session keeps across pages: the forget set and tasks follow the loaded model, and every
page says in its sidebar which model, how many instances, full or partial and which tasks."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
PAGES = ["model", "select", "unlearn", "interference", "compare", "contrast", "explain", "history"]


def _app(**state) -> AppTest:
    app = AppTest.from_file(MAIN, default_timeout=900)
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def _sidebar(app) -> str:
    return " ".join(block.value for block in app.sidebar.markdown)


def test_a_new_model_resets_the_tasks_and_drops_the_ids_it_lacks(street_copy):
    """Issue 19, defect 6: tasks picked for one model do not make a partial request on the next."""
    card = json.loads(street_copy.with_suffix(".json").read_text())
    card["train_ids"] = list(range(400))
    street_copy.with_suffix(".json").write_text(json.dumps(card))
    app = _app(selection=[3, 500, 612], target_tasks=["depth"])  # partial-task on synthetic-indoor
    app.radio(key="model_source").set_value("Path on this machine").run()
    app.text_input(key="model_typed_path").input(str(street_copy)).run()
    assert not app.exception and not app.error
    assert app.session_state["target_tasks"] == ["segmentation", "depth"]
    assert app.session_state["selection"] == [3]
    note = " ".join(w.value for w in app.warning)
    assert "full-task" in note and "500, 612" in note and "street" in note
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    assert "Full-task unlearning of 1 instances" in app.markdown[0].value
    app.switch_page("pages/model.py").run()  # the same model again: nothing more is reset
    assert not app.warning and app.session_state["selection"] == [3]


@pytest.mark.parametrize("page", PAGES)
def test_every_page_says_the_model_the_forget_set_and_the_tasks(page):
    app = _app(selection=[3, 17, 42], target_tasks=["depth"])
    app.switch_page(f"pages/{page}.py").run()
    assert not app.exception
    line = _sidebar(app)
    assert "synthetic-indoor" in line and "3 forget instances" in line
    assert "partial-task: forget depth, keep segmentation, normal" in line


def test_the_sidebar_follows_a_change_in_the_same_run():
    app = _app()
    assert "0 forget instances" in _sidebar(app) and "full-task" in _sidebar(app)
    app.selectbox(key="model_name").select("synthetic-street").run()
    assert "synthetic-street" in _sidebar(app) and "full-task: segmentation, depth" in _sidebar(app)
    app.switch_page("pages/select.py").run()
    app.text_input(key="id_search").input("3, 17").run()
    app.button[0].click().run()
    assert "2 forget instances" in _sidebar(app)
    app.multiselect(key="target_tasks").set_value(["depth"]).run()
    assert "partial-task: forget depth, keep segmentation" in _sidebar(app)
