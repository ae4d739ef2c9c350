"""The Interference page's Per class view (issue 21 part 4): per-class IoU of the segmentation-like
tasks on forget, retain and test, before, after (and the oracle), and the change of the
prediction matrix."""


def test_the_per_class_view_shows_iou_per_class_and_the_confusion_change(street_run, interference_page):
    app = interference_page("Per class")
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
