"""Interference page: what a finished run changed, per task and split, and why. A run's scores are
computed once, under a status line, and kept beside the ledger (`app.state.run_results`); every
other computation shows a spinner."""

from pathlib import Path

import streamlit as st

from app.charts import (
    conflict_heatmap,
    conflict_layer_heatmap,
    geometry_table,
    metric_shift_figure,
    subspace_ranks_figure,
    uis_breakdown_figure,
)
from app.state import (
    USER_ERRORS,
    cached_checkpoint,
    cached_data,
    explain,
    missing_result,
    run_picker,
    run_results,
    start_summary,
)
from core.checkpoints import checkpoint_zip
from core.evaluation.geometry import conflict_label, peak_cross_task_cos, task_geometry
from core.explore import predict
from core.visual import instance_panels

st.title("Interference")
start_summary()  # the sidebar line: model, forget set, tasks
run = run_picker()
if run is None:
    st.stop()
comparison, conflicts = run_results(run)

board = comparison.leaderboard.set_index("model")
ours = board.loc[run.method]
cols = st.columns(5)
for col, (label, key) in zip(cols, [("UIS", "uis"), ("forget gap", "forget_gap"), ("ILI", "ili"),
                                    ("TLI", "tli"), ("MIA AUC", "mia_auc")]):
    value, before = ours[key], board.loc["original", key]
    defined = value == value and before == before  # neither is NaN
    change = f"{value - before:+.2f} vs original" if key != "mia_auc" and defined else None
    col.metric(label, f"{value:.3f}" if value == value else "–", delta=change, delta_color="inverse")
st.dataframe(comparison.leaderboard.style.format(precision=3), hide_index=True, width="stretch")
if run.checkpoint and (missing := missing_result(run.checkpoint)):
    st.warning(f"The unlearned model {missing} is missing (deleted from the results folder?): no download; "
               "the scores above were computed while it was loaded.")
elif run.checkpoint:
    try:
        archive = run.cache["zip"] = run.cache.get("zip") or checkpoint_zip(run.checkpoint)
    except USER_ERRORS as error:
        st.warning(f"The unlearned model saved as {run.checkpoint} cannot be downloaded: {explain(error)}")
    else:
        st.download_button(f"Download the unlearned model (.zip), saved as {run.checkpoint}", archive,
                           f"{Path(run.checkpoint).stem}.zip", "application/zip", key=f"download_{run.id}")

if "figures" not in run.cache:  # built once per run: Plotly Express takes about 0.5 s for these
    primary = comparison.scores[comparison.scores["primary"]]
    vs_oracle = " vs oracle" if run.oracle is not None else ""
    shifts = f"Primary metric per split: original vs unlearned{vs_oracle}"
    with st.spinner("Drawing the charts..."):
        run.cache["figures"] = {
            "shifts": metric_shift_figure(primary, shifts),
            "breakdown": uis_breakdown_figure(comparison.breakdown, "UIS by task, stacked by component"),
            "conflicts": conflict_heatmap(conflicts.overall, "Forget vs retain gradient angle"),
            "layers": conflict_layer_heatmap(conflicts.by_layer, "Per shared layer"),
            **({"ranks": subspace_ranks_figure(run.extras["subspace_ranks"])}
               if run.extras.get("subspace_ranks") else {})}
figures = run.cache["figures"]
# one view at a time: the browser's drawing of Plotly charts is what a redraw waits on
VIEWS = {"Shifts and UIS": "per-task metric shifts and the UIS breakdown",
         "Conflicts": "gradient angles overall and per layer, subspace ranks",
         "Instances": "at-risk retain instances, predictions before and after"}
view = st.radio("View", list(VIEWS), horizontal=True, key="interference_view",
                help=". ".join(f"{name}: {what}" for name, what in VIEWS.items()))
if view == "Shifts and UIS":
    st.plotly_chart(figures["shifts"], width="content", key="shifts")
    st.plotly_chart(figures["breakdown"], width="content", key="breakdown")
elif view == "Conflicts":
    st.plotly_chart(figures["conflicts"], width="content", key="conflicts")
    st.plotly_chart(figures["layers"], width="content", key="layers")
    if "ranks" in figures:
        st.plotly_chart(figures["ranks"], width="content", key="ranks")
    if "geometry" not in run.cache and st.button("Measure the task geometry of the original model",
                                                 key="geometry"):
        original, _ = cached_checkpoint(run.model_path)
        data = cached_data(run.model_path, run.data_root)
        with st.spinner("Measuring the task geometry (per-image gradients on 32 retain images)..."):
            run.cache["geometry"] = task_geometry(original, data, run.request.instances, retain_sample=32)
    if "geometry" in run.cache:
        geometry = run.cache["geometry"]
        st.subheader(f"Task geometry: {conflict_label(geometry)} "
                     f"(peak per-image cross-task |cos| {peak_cross_task_cos(geometry):.2f})")
        st.caption("Per shared layer: mean per-image cosine of two tasks' gradients on retain images, "
                   "the batch cosine, the cosine of the tasks' gradients on the forget images, and "
                   "rank(V) / C_out of interference_aware's output basis when forgetting each task.")
        st.dataframe(geometry_table(geometry).style.format(precision=2), hide_index=True, width="stretch")
else:
    st.subheader("At-risk retain instances")
    st.caption("Per-sample gradients most aligned with (they gain) and most opposed to (they lose) "
               "the forget update.")
    st.dataframe(conflicts.at_risk, hide_index=True, width="stretch")
    st.subheader("Predictions before and after, on the forget instances")
    if "panels" not in run.cache:
        train = cached_data(run.model_path, run.data_root).train
        original, _ = cached_checkpoint(run.model_path)
        shown, models = list(run.request.instances)[:4], {"before": original, "after": run.model}
        if run.oracle is not None:
            models["oracle"] = run.oracle
        batch = train.batch(shown)
        with st.spinner("Predicting the forget instances before and after..."):
            predictions = {label: predict(m, train, shown) for label, m in models.items()}
        run.cache["panels"] = {instance: instance_panels(train.tasks, batch, predictions, index)
                               for index, instance in enumerate(shown)}
    for instance, panels in run.cache["panels"].items():
        st.image([p for _, p in panels], caption=[f"{instance} {c}" for c, _ in panels], width=96)
