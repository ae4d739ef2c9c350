from pathlib import Path

import pandas as pd
from streamlit.testing.v1 import AppTest

from app.charts import instance_scatter, selected_ids

PAGE = str(Path(__file__).resolve().parents[2] / "app" / "pages" / "select.py")
TABLE = pd.DataFrame({"id": [4, 7, 9], "x": [0.0, 1.0, 2.0], "y": [1.0, 0.0, -1.0],
                      "depth:loss": [0.1, 0.5, 0.9]})


def test_instance_scatter_colours_points_and_rings_the_forget_set():
    figure = instance_scatter(TABLE, "depth:loss", [7, 12])
    points, chosen = figure.data
    assert list(points.customdata) == [4, 7, 9] and list(points.marker.color) == [0.1, 0.5, 0.9]
    assert list(chosen.customdata) == [7] and list(chosen.x) == [1.0]
    assert figure.layout.dragmode == "lasso"
    assert points.marker.colorbar.title.text == "depth:loss"
    # a small map stays SVG (a WebGL context costs about 0.1 s in a browser without a GPU) ...
    assert {trace.type for trace in figure.data} == {"scatter"}
    # ... and thousands of instances stay fast (issue 21 part 7): WebGL traces
    from app.charts import WEBGL_FROM

    many = pd.DataFrame({"id": range(WEBGL_FROM), "x": 0.0, "y": 0.0, "depth:loss": 0.5})
    assert {trace.type for trace in instance_scatter(many, "depth:loss", [3]).data} == {"scattergl"}


def test_selected_ids_reads_customdata_of_either_trace():
    points = [{"curve_number": 0, "point_index": 1, "customdata": 7},
              {"curve_number": 1, "point_index": 0, "customdata": [7]}, {"customdata": [9]}]
    assert selected_ids(points) == {7, 9}


def test_select_page_builds_the_forget_set_and_says_the_mode():
    app = AppTest.from_file(PAGE, default_timeout=900).run()
    assert not app.exception
    assert app.title[0].value == "Select"
    assert app.multiselect(key="target_tasks").value == ["segmentation", "depth", "normal"]
    assert "Full-task unlearning" in app.markdown[0].value
    assert len(app.dataframe[0].value) == 800

    app.text_input(key="id_search").input("3, 17, 40-42").run()
    app.button[0].click().run()
    assert not app.exception
    assert app.session_state["selection"] == [3, 17, 40, 41, 42]
    assert len(app.image) == 5  # one row per selected instance: input, then truth and prediction per task
    assert app.image[0].captions == ["3 input", "3 segmentation truth", "3 segmentation prediction",
                                     "3 depth truth", "3 depth prediction", "3 normal truth",
                                     "3 normal prediction"]

    app.multiselect(key="target_tasks").set_value(["depth"]).run()
    assert app.session_state["target_tasks"] == ["depth"]
    assert "Partial-task unlearning:** forget depth; keep segmentation, normal" in app.markdown[0].value

    app.text_input(key="id_search").input("3,x").run()
    assert "'x' is not an id or a range" in app.error[0].value
    assert app.button[0].disabled and app.button[1].disabled
    assert app.session_state["selection"] == [3, 17, 40, 41, 42]

    app.text_input(key="id_search").input("5, 900").run()
    assert "900 are not in the training set" in app.error[0].value

    app.button[2].click().run()
    assert app.session_state["selection"] == [] and not app.exception


def test_single_ids_leave_the_forget_set_and_capped_thumbnails_are_named():
    """Issue 19, ergonomics: a person removes one id from the forget set (its chip), the page
    says how many instances are picked before they are added, and that the thumbnails show only
    the first ones of a larger forget set."""
    app = AppTest.from_file(PAGE, default_timeout=900)
    app.session_state["selection"] = list(range(10, 22))
    app.run()
    assert not app.exception
    chips = app.multiselect(key="forget_chips")
    assert chips.value == list(range(10, 22))
    assert any("first 8 of the 12 forget instances" in c.value for c in app.caption)
    assert len(app.image) == 8
    chips.unselect(17).run()
    assert app.session_state["selection"] == [10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21]
    assert "Forget set: 11 instances" in [s.value for s in app.subheader]
    app.text_input(key="id_search").input("3, 5-6").run()
    assert any("Picked: 3 instances" in m.value for m in app.markdown)
    app.button[0].click().run()  # added: the chips follow
    assert app.multiselect(key="forget_chips").value == [3, 5, 6, 10, 11, 12, 13, 14, 15, 16, 18, 19, 20, 21]
    app.session_state["selection"] = [3, 5]
    app.run()
    assert not any("first 8" in c.value for c in app.caption) and len(app.image) == 2


def test_thumbnails_are_predicted_once_per_forget_set(monkeypatch):
    """Issue 19, speed: a click on the page (here a new colour) reran the forget instances'
    predictions; they are cached per model and forget set."""
    import core.explore

    calls = []
    predict = core.explore.predict
    monkeypatch.setattr(core.explore, "predict", lambda *args: calls.append(args[2]) or predict(*args))
    app = AppTest.from_file(PAGE, default_timeout=900)
    app.session_state["selection"] = [4, 5]
    app.run()
    app.selectbox(key="colour").set_value(app.selectbox(key="colour").options[1]).run()
    assert not app.exception and len(app.image) == 2 and calls == [[4, 5]]
