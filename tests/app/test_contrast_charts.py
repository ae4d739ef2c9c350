"""The pure figure builders a contrast of two runs draws with (issue 21 part 5): one colour per
model in every chart, A and B never alike, and the per-class table with both runs."""

import numpy as np
import pandas as pd

from app.charts import (
    METHOD_COLOURS,
    ORACLE_COLOUR,
    ORIGINAL_COLOUR,
    attack_histogram,
    class_change_table,
    class_iou_figure,
    contrast_colours,
    model_colour,
    roc_figure,
)


def test_a_and_b_take_their_methods_colours_and_never_the_same_one():
    colours = contrast_colours("grad_ascent", "scrub")
    assert colours == {"original": ORIGINAL_COLOUR, "A": model_colour("grad_ascent"),
                       "B": model_colour("scrub"), "retrain": ORACLE_COLOUR}
    same = contrast_colours("scrub", "scrub")
    assert same["A"] == model_colour("scrub") and same["B"] != same["A"] and same["B"] in METHOD_COLOURS
    last = contrast_colours("my_plugin_method", "my_plugin_method")  # a colour from its name's CRC
    assert last["B"] == METHOD_COLOURS[(METHOD_COLOURS.index(last["A"]) + 1) % len(METHOD_COLOURS)]


def test_roc_curves_and_histogram_panels_in_the_given_colours():
    colours = contrast_colours("grad_ascent", "grad_ascent")
    curves = pd.DataFrame({"model": ["original", "original", "A", "A", "B", "B"], "fpr": [0, 1] * 3,
                           "tpr": [0, 1] * 3})
    roc = roc_figure(curves, {"A": "A: grad_ascent"}, colours)
    assert [(t.name, t.line.color) for t in roc.data[:3]] == [
        ("original", ORIGINAL_COLOUR), ("A: grad_ascent", colours["A"]), ("B", colours["B"])]
    assert roc_figure(curves.assign(model="scrub")).data[0].line.color == model_colour("scrub")
    scores = pd.DataFrame({"model": ["original", "A", "B"] * 3, "group": ["forget"] * 3 + ["unseen"] * 6,
                           "loss_attack": np.linspace(0, 1, 9)})
    histogram = attack_histogram(scores, "loss_attack", {"B": "B: grad_ascent"}, colours)
    assert [(a.text, a.font.color) for a in histogram.layout.annotations] == [
        ("original", ORIGINAL_COLOUR), ("A", colours["A"]), ("B: grad_ascent", colours["B"])]


def test_per_class_iou_and_table_with_both_runs():
    table = pd.DataFrame([{"model": m, "split": "test", "task": "seg", "class": c, "iou": iou, "pixels": 10}
                          for m, ious in (("original", (0.8, 0.6)), ("A", (0.7, 0.6)), ("B", (0.5, 0.4)),
                                          ("retrain", (0.6, 0.5)))
                          for c, iou in zip(("road", "sky"), ious)])
    colours = contrast_colours("grad_ascent", "scrub")
    bars = class_iou_figure(table, "seg", {"A": "A: grad_ascent", "B": "B: scrub"}, colours)
    assert {t.name: t.marker.color for t in bars.data} == {
        "original": ORIGINAL_COLOUR, "A: grad_ascent": colours["A"], "B: scrub": colours["B"],
        "retrain": ORACLE_COLOUR}
    shown = class_change_table(table, "seg", ["A", "B"])
    assert list(shown.columns) == ["split", "class", "true pixels", "IoU before", "IoU A", "IoU B",
                                   "IoU of the oracle", "change A", "change B"]
    assert np.allclose(shown["change B"], [-0.3, -0.2]) and np.allclose(shown["change A"], [-0.1, 0.0])


def test_the_prediction_matrix_title_fits_its_figure():
    """Issue 21: a contrast's long title (task, split, B's and A's runs) was cut at the figure's
    right edge; it is wrapped into lines the figure's width holds, with the explanation below."""
    import re

    import numpy as np

    from app.charts import confusion_change_figure

    classes = ["road", "sky", "building"]
    figure = confusion_change_figure(np.zeros((3, 3)), classes, "segmentation on forget",
                                     "B: neggrad_plus_calibrated (#L12) minus A: interference_aware (#L11)",
                                     "share of each true class's pixels predicted as each class")
    lines = re.sub(r"<[^>]+>", "\n", figure.layout.title.text.replace("<br>", "\n")).split("\n")
    width = figure.layout.width
    assert width and all(len(line) * 9 <= width - 40 for line in lines), (width, lines)
    assert "neggrad_plus_calibrated (#L12)" in figure.layout.title.text
    assert figure.layout.margin.t >= 30 * len([line for line in lines if line])
