"""The Interference page's Per class view (issue 21 part 4): per-class IoU of the segmentation-like
tasks on forget, retain and test, before, after (and the oracle), and the change of the
prediction matrix."""

from pathlib import Path

from streamlit.testing.v1 import AppTest

from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint
from core.ledger import Ledger
from core.unlearning.runner import run_request

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")


def test_the_per_class_view_shows_iou_per_class_and_the_confusion_change(mtu_home):
    model, card = load_checkpoint(SAMPLE_MODELS_DIR / "synthetic-street")
    ledger = Ledger()
    run_request(model, card, SAMPLE_MODELS_DIR / "synthetic-street", [1, 2, 3], None, "grad_ascent",
                {"steps": 1}, ledger.results_folder(), ledger=ledger, source="dashboard", store=True)
    app = AppTest.from_file(MAIN, default_timeout=300)
    app.session_state["model_name"] = "synthetic-street"
    app.run()
    app.switch_page("pages/interference.py").run()
    assert not app.exception
    app.radio(key="interference_view").set_value("Per class").run()
    assert not app.exception, app.exception
    charts = app.get("plotly_chart")
    assert len(charts) == 2  # IoU per class, the change of the prediction matrix
    bars, heatmap = (chart.proto.spec for chart in charts)
    assert "road" in bars and "sky" in bars and "IoU" in bars  # the card's class names
    assert "heatmap" in heatmap
    # the split and the model of the prediction matrix can be chosen; a choice redraws it
    app.selectbox(key="per_class_split").set_value("test").run()
    assert not app.exception and len(app.get("plotly_chart")) == 2
    table = app.dataframe[-1].value
    assert {"class", "split"} <= set(table.columns) and "road" in set(table["class"])
