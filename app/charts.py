"""Pure chart and table builders: DataFrame or dict in, Plotly figure or DataFrame out."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def metrics_frame(metrics: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """Tidy rows (split, task, metric, value) from {split: {task: {metric: value}}}."""
    rows = [
        {"split": split, "task": task, "metric": metric, "value": value}
        for split, tasks in metrics.items()
        for task, values in tasks.items()
        for metric, value in values.items()
    ]
    return pd.DataFrame(rows, columns=["split", "task", "metric", "value"])


def primary_metric_chart(frame: pd.DataFrame, primary: dict[str, str]) -> go.Figure:
    """Grouped bars of each task's primary metric per split.

    Args:
        frame: tidy metrics from `metrics_frame`.
        primary: {task: primary metric name}.
    """
    keep = frame[frame.apply(lambda row: primary.get(row["task"]) == row["metric"], axis=1)]
    keep = keep.assign(label=keep["task"] + " (" + keep["metric"] + ")")
    figure = px.bar(keep, x="label", y="value", color="split", barmode="group",
                    labels={"label": "task (primary metric)", "value": "score"},
                    range_y=[0, 1])
    figure.update_layout(margin={"l": 10, "r": 10, "t": 30, "b": 10}, legend_title_text="")
    return figure
