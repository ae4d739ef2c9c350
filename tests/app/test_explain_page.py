import copy
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from app.charts import attribution_figure
from app.state import DEFAULT_MODEL, Run
from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
from core.requests import ForgetRequest

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "pages" / "explain.py")


def test_attribution_figure_shares_a_symmetric_scale():
    image = np.zeros((4, 5, 3), dtype=np.uint8)
    before, after = np.full((4, 5), 0.5), np.full((4, 5), -2.0)
    figure = attribution_figure(image, before, after, "IG")
    assert [type(trace).__name__ for trace in figure.data] == ["Image", "Heatmap", "Heatmap"]
    assert figure.layout.coloraxis.cmin == -2.0 and figure.layout.coloraxis.cmax == 2.0
    assert {trace.coloraxis for trace in figure.data[1:]} == {"coloraxis"}
    np.testing.assert_array_equal(figure.data[2].z, after)
    assert figure.layout.title.text == "IG"
    flat = attribution_figure(image, np.zeros((4, 5)), np.zeros((4, 5)), "zero")
    assert flat.layout.coloraxis.cmax == 1.0
    with pytest.raises(ValueError, match="do not match"):
        attribution_figure(image, before, np.zeros((5, 4)), "bad")


@pytest.fixture(scope="module")
def run():
    path = str(SAMPLE_MODELS_DIR / DEFAULT_MODEL)
    model, card = load_checkpoint(path)
    request = ForgetRequest.build([3, 17], None, card.train_ids, list(model.tasks))
    return Run(id=1, model_path=path, method="grad_ascent", config={}, request=request,
               model=copy.deepcopy(model), seconds=0.1, history=[])


def open_page(run) -> AppTest:
    app = AppTest.from_file(PAGE, default_timeout=900)
    app.session_state["runs"] = [run]
    return app.run()


def test_explain_shows_attributions_and_scores(run):
    app = open_page(run)
    assert not app.exception
    assert app.title[0].value == "Explain"
    assert app.number_input(key="explain_instance_1").value == 3
    assert app.selectbox(key="explain_class_segmentation").options[1] == "wall"
    app.button[0].click().run()
    assert not app.exception and not app.error
    assert len(app.get("plotly_chart")) == 1
    assert [m.label for m in app.metric] == ["Score before", "Score after"]

    app.selectbox(key="explain_method").select("layer_gradcam")
    app.selectbox(key="explain_task_1").select("depth").run()
    assert app.selectbox(key="explain_method").value == "layer_gradcam"
    app.radio(key="explain_region").set_value("Rectangle").run()
    app.button[0].click().run()
    assert not app.exception and not app.error
    assert len(app.get("plotly_chart")) == 1
    assert ("explain", 3, "depth", "layer_gradcam", None, (16, 16, 32, 32)) in run.cache


def test_wrong_inputs_show_messages(run):
    app = open_page(run)
    app.radio(key="explain_region").set_value("Rectangle").run()
    app.number_input(key="explain_Top").set_value(60)
    app.button[0].click().run()
    assert not app.exception
    assert "leaves the 64x64 image" in app.error[0].value
    app.number_input(key="explain_Top").set_value(0)
    app.number_input(key="explain_instance_1").set_value(99999)
    app.button[0].click().run()
    assert not app.exception
    assert "unknown instance id 99999" in app.error[0].value


def test_without_runs_the_page_says_what_to_do():
    app = AppTest.from_file(PAGE, default_timeout=900).run()
    assert not app.exception
    assert "No run yet" in app.info[0].value
    assert not app.button
