from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.charts import metrics_frame, primary_metric_chart
from core.checkpoints import SAMPLE_MODELS_DIR

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
METRICS = {"train": {"depth": {"abs_err": 0.2, "delta1": 0.9}},
           "val": {"depth": {"abs_err": 0.4, "delta1": 0.7}}}


def test_metrics_frame_is_tidy():
    frame = metrics_frame(METRICS)
    assert list(frame.columns) == ["split", "task", "metric", "value"]
    assert len(frame) == 4
    assert frame.query("split == 'val' and metric == 'delta1'")["value"].item() == 0.7


def test_primary_chart_keeps_only_primary_metrics():
    figure = primary_metric_chart(metrics_frame(METRICS), {"depth": "delta1"})
    values = sorted(v for trace in figure.data for v in trace.y)
    assert values == [0.7, 0.9]
    assert {trace.name for trace in figure.data} == {"train", "val"}


def test_model_page_shows_card_and_val_metrics():
    app = AppTest.from_file(MAIN, default_timeout=900).run()
    assert not app.exception
    assert app.title[0].value == "Model"
    names = app.selectbox(key="model_name").options
    assert "synthetic-indoor" in names
    assert any("Benchmark:** synthetic-indoor" in block.value for block in app.markdown)
    table = app.dataframe[0].value
    assert "val" in table.columns and "train" in table.columns
    app.selectbox(key="model_name").select("synthetic-street").run()
    assert not app.exception
    assert any("synthetic-street" in block.value for block in app.markdown)


def test_a_bad_upload_or_data_folder_is_a_message(tmp_path):
    from app.state import save_upload

    app = AppTest.from_file(MAIN, default_timeout=900).run()
    app.text_input(key="data_root").input(str(tmp_path / "missing")).run()
    assert not app.exception
    assert "missing" in app.error[0].value
    app.text_input(key="data_root").input("").run()
    app.radio(key="model_source").set_value("Upload").run()
    assert not app.exception and "Upload both files" in app.info[0].value

    # an altered weights file (as an upload would store it) is refused with a message
    weights = (SAMPLE_MODELS_DIR / "synthetic-street.safetensors").read_bytes()
    card = (SAMPLE_MODELS_DIR / "synthetic-street.json").read_bytes()
    app.session_state["model_path"] = save_upload(weights[:-4] + b"\0\0\0\0", card)
    app.session_state["selection"] = [1]
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    assert "altered" in app.error[0].value or "hash" in app.error[0].value


def test_the_loaded_model_holds_across_pages():
    """Issue 19, defect 1: going back to the Model page keeps the model chosen there."""
    street = str(SAMPLE_MODELS_DIR / "synthetic-street")
    app = AppTest.from_file(MAIN, default_timeout=900).run()
    app.selectbox(key="model_name").select("synthetic-street").run()
    for page in ("pages/history.py", "pages/history.py", "pages/model.py", "pages/model.py"):
        app.switch_page(page).run()
        assert not app.exception
        assert app.session_state["model_path"] == street
    assert app.selectbox(key="model_name").value == "synthetic-street"
    assert any("Benchmark:** synthetic-street" in block.value for block in app.markdown)


def test_an_uploaded_model_holds_across_pages():
    """The file uploaders cannot be refilled: back on the Model page, the upload stays in use."""
    street = SAMPLE_MODELS_DIR / "synthetic-street"
    app = AppTest.from_file(MAIN, default_timeout=900).run()
    app.radio(key="model_source").set_value("Upload").run()
    app.file_uploader(key="upload_weights").set_value(
        ("w.safetensors", street.with_suffix(".safetensors").read_bytes(), "application/octet-stream"))
    app.file_uploader(key="upload_card").set_value(("c.json", street.with_suffix(".json").read_bytes(),
                                                    "application/json"))
    app.run()
    uploaded = app.session_state["model_path"]
    assert not app.exception and not app.error and "uploads" in uploaded
    app.switch_page("pages/history.py").run()
    app.switch_page("pages/model.py").run()
    assert not app.exception and not app.error and app.session_state["model_path"] == uploaded
    assert any("uploaded before" in c.value for c in app.caption)
    assert any("Benchmark:** synthetic-street" in block.value for block in app.markdown)
