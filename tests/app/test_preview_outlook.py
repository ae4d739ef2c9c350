"""The Unlearn page's preview says, before a run, whether task-aware projection has room on the
loaded model and request and which parts of interference_aware will act (issue 20 part 6)."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def _preview(method, **state):
    app = AppTest.from_file(MAIN, default_timeout=900)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    app.switch_page("pages/unlearn.py").run()
    app.selectbox(key="method").set_value(method).run()
    next(b for b in app.button if b.label == "Will task-aware projection help here?").click().run()
    assert not app.exception
    return " ".join(m.value for m in app.markdown)


def test_the_preview_says_what_interference_aware_will_do():
    text = _preview("interference_aware", selection=[3, 17, 42], target_tasks=["depth"])
    assert "What interference_aware will do on this request" in text
    assert "task conflict" in text.lower()
    assert "TGP: the output basis leaves room in" in text  # both parts run in every mode
    assert "IGO runs" in text and "the kept tasks' gradients on the forget images" in text
    assert "It stops when the forget images' primary metric reaches that of unseen calibration images" in text


def test_the_preview_follows_the_switches():
    text = _preview("interference_aware_by_mode", selection=[3, 17, 42], target_tasks=["depth"])
    assert "IGO does not run in partial-task requests" in text
    assert "What interference_aware_by_mode will do" in text


def test_other_methods_get_the_conflict_label_only():
    text = _preview("grad_ascent", selection=[3, 17, 42])
    assert "task conflict" in text.lower() and "What interference_aware will do" not in text
