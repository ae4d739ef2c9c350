import pandas as pd
import pytest

from core.evaluation.figures import (
    conflict_heatmap,
    conflict_layer_heatmap,
    metric_shift_figure,
    tradeoff_figure,
    uis_bar_figure,
    uis_breakdown_figure,
)


def test_uis_bar_has_error_bars():
    summary = pd.DataFrame({"model": ["a", "b"], "uis_mean": [3.0, 5.0], "uis_std": [0.5, 1.0]})
    figure = uis_bar_figure(summary)
    assert sum(len(t.y) for t in figure.data) == 2
    assert [list(t.error_y.array) for t in figure.data] == [[0.5], [1.0]]


def test_breakdown_stacks_to_uis():
    # two tasks; model m: task a target (d=.1, f=.3), task b kept (d=.2, k=.4)
    breakdown = pd.DataFrame({"model": ["m", "m"], "task": ["a", "b"], "test_half": [0.05, 0.1],
                              "forget_half": [0.15, 0.0], "kept_half": [0.0, 0.2]})
    figure = uis_breakdown_figure(breakdown)
    total = sum(sum(t.y) for t in figure.data)
    uis = 100 * ((0.1 + 0.3) / 2 + (0.2 + 0.4) / 2) / 2
    assert total == pytest.approx(uis)
    assert {t.name for t in figure.data} == {"test drift", "forget gap", "kept drift"}


def test_metric_shift_orders_splits():
    scores = pd.DataFrame({"model": ["o", "u"] * 2, "split": ["test", "test", "forget", "forget"],
                           "task": ["a"] * 4, "value": [0.5, 0.4, 0.9, 0.5]})
    figure = metric_shift_figure(scores)
    assert {t.name for t in figure.data} == {"o", "u"}
    assert figure.layout.xaxis.categoryarray == ("forget", "test")


def test_conflict_heatmaps_show_angles():
    conflicts = pd.DataFrame({"forget_task": ["a", "a"], "retain_task": ["a", "b"], "cosine": [1.0, -1.0]})
    figure = conflict_heatmap(conflicts)
    assert figure.data[0].z.tolist() == [[0.0, 180.0]]
    by_layer = conflicts.assign(layer="enc.0")
    figure = conflict_layer_heatmap(by_layer)
    assert list(figure.data[0].x) == ["a → a", "a → b"] and list(figure.data[0].y) == ["enc.0"]


def test_tradeoff_uses_tli_when_defined():
    board = pd.DataFrame({"model": ["a", "b"], "forget_gap": [1.0, 2.0], "ili": [3.0, 4.0],
                          "tli": [float("nan"), 5.0], "seconds": [1.0, None]})
    figure = tradeoff_figure(board)
    ys = {t.name: t.y[0] for t in figure.data}
    assert ys == {"a": 3.0, "b": 5.0}
