"""Interference page: what a finished run changed, per task and split, and why."""

import streamlit as st

from app.charts import (
    conflict_heatmap,
    conflict_layer_heatmap,
    metric_shift_figure,
    subspace_ranks_figure,
    uis_breakdown_figure,
)
from app.state import cached_checkpoint, cached_data, run_picker, run_results
from core.explore import predict
from core.visual import instance_panels

st.title("Interference")
run = run_picker()
if run is None:
    st.stop()
comparison, conflicts = run_results(run)

board = comparison.leaderboard.set_index("model")
ours = board.loc[run.method]
cols = st.columns(5)
for col, (label, key) in zip(cols, [("UIS", "uis"), ("forget gap", "forget_gap"), ("ILI", "ili"),
                                    ("TLI", "tli"), ("MIA AUC", "mia_auc")]):
    change = None if key == "mia_auc" else f"{ours[key] - board.loc['original', key]:+.2f} vs original"
    col.metric(label, f"{ours[key]:.3f}" if ours[key] == ours[key] else "–", delta=change,
               delta_color="inverse")
st.dataframe(comparison.leaderboard, hide_index=True, width="stretch")

primary = comparison.scores[comparison.scores["primary"]]
st.plotly_chart(metric_shift_figure(primary, "Primary metric per split: original vs unlearned"
                                    + (" vs oracle" if run.oracle is not None else "")),
                width="stretch", key="shifts")
st.plotly_chart(uis_breakdown_figure(comparison.breakdown, "UIS by task, stacked by component"),
                width="stretch", key="breakdown")
left, right = st.columns(2)
left.plotly_chart(conflict_heatmap(conflicts.overall, "Forget vs retain gradient angle"),
                  width="stretch", key="conflicts")
right.plotly_chart(conflict_layer_heatmap(conflicts.by_layer, "Per shared layer"),
                   width="stretch", key="layers")
if run.extras.get("subspace_ranks"):
    st.plotly_chart(subspace_ranks_figure(run.extras["subspace_ranks"],),
                    width="stretch", key="ranks")
st.subheader("At-risk retain instances")
st.caption("Per-sample gradients most aligned with (they gain) and most opposed to (they lose) "
           "the forget update.")
st.dataframe(conflicts.at_risk, hide_index=True, width="stretch")

st.subheader("Predictions before and after, on the forget instances")
train, (original, _) = cached_data(run.model_path, run.data_root).train, cached_checkpoint(run.model_path)
shown = list(run.request.instances)[:4]
batch = train.batch(shown)
models = {"before": original, "after": run.model} | ({"oracle": run.oracle} if run.oracle is not None else {})
predictions = {label: predict(model, train, shown) for label, model in models.items()}
for index, instance in enumerate(shown):
    captions, pictures = zip(*instance_panels(train.tasks, batch, predictions, index))
    st.image(list(pictures), caption=[f"{instance} {c}" for c in captions], width=96)
