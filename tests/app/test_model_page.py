from pathlib import Path

from streamlit.testing.v1 import AppTest

from app.charts import metrics_frame, primary_metric_chart

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
    app = AppTest.from_file(MAIN, default_timeout=60).run()
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
