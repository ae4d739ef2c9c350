"""Interference page: what a finished run changed, per task and split, and why. At the top, the
run's verdict in one sentence and its scores (UIS v2 first, each with its definition); below, the
charts. A run's scores are computed once, under a status line, and kept beside the ledger
(`app.state.run_results`); every other computation shows a spinner. The run's one-page report
(HTML, prints to PDF) is a download here and on the History page."""

import streamlit as st

from app.charts import (
    KPIS,
    geometry_table,
    loss_curves_figure,
    person_table,
    shown_number,
    split_table,
)
from app.report import download_name
from app.state import (
    USER_ERRORS,
    cached_checkpoint,
    cached_data,
    explain,
    missing_result,
    model_label,
    oracle_note,
    report_download,
    result_figures,
    run_picker,
    run_results,
    run_verdict,
    share,
    start_summary,
)
from app.views.attack import attack_view
from app.views.maps import twin_maps_view
from app.views.per_class import per_class_view
from app.views.similarity import similarity_view
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
approximate = oracle_note(run.model_path) if run.oracle is not None else None

st.info(f"**Verdict.** {run_verdict(run)}")
if approximate:
    st.caption(f"Retrain oracle: {approximate}.")
board = comparison.leaderboard.set_index("model")
ours = board.loc[run.method]


def tile(column, key: str, reference: str = "original", digits: int = 2,
         delta_text: str | None = None) -> None:
    """One score: its value, its change against `reference`, and its definition as help."""
    label, meaning = KPIS[key]
    value, before = ours[key], board.loc[reference, key] if reference in board.index else float("nan")
    defined = value == value and before == before  # neither is NaN
    delta = delta_text or (f"{value - before:+.{digits}f} vs {reference}" if defined else None)
    column.metric(label, shown_number(value, digits), delta=delta, help=meaning,
                  delta_color="off" if delta_text else "inverse")


has_oracle = "retrain" in board.index
headline = st.columns(4)
tile(headline[0], "uis2")
tile(headline[1], "uis")
if has_oracle:
    tile(headline[2], "oracle_gap")
else:
    headline[2].metric(KPIS["oracle_gap"][0], "–", help=KPIS["oracle_gap"][1] + " Train the retrain "
                       "oracle with the run (Unlearn page) to measure it.")
references = "; ".join(["0.5 = unseen"] + ([f"oracle {shown_number(board.loc['retrain', 'mia_auc'])}"]
                                           if has_oracle else []))
tile(headline[3], "mia_auc", digits=3, delta_text=references)
more = st.columns(4)
for column, key in zip(more, ("forget_gap", "ili", "tli")):
    tile(column, key)
more[3].metric(KPIS["seconds"][0], shown_number(run.seconds, 1), help=KPIS["seconds"][1])
referenced = "the retrain oracle" if has_oracle else "the original model (no oracle)"
st.caption(f"UIS v2 is referenced to {referenced}"
           "; hover over a score for its definition. Lower is better for every score but the attack's "
           "AUC, whose target is 0.5 (unseen) or the oracle's value.")
if "tables" not in run.cache:  # built once per run, not on every rerun
    run.cache["tables"] = (person_table(comparison.leaderboard, approximate is not None),
                           split_table(comparison.scores, run.method, approximate is not None))
scores_table, splits_table = run.cache["tables"]
st.dataframe(scores_table, hide_index=True, width="stretch")
with st.expander("Before, after and the oracle, per task and split"):
    st.dataframe(splits_table, hide_index=True, width="stretch")
ticket = run.reason or f"run{run.id}"
left, right = st.columns(2)
with left:
    report_download(run, key=f"report_{run.id}")
if run.checkpoint and (missing := missing_result(run.checkpoint)):
    right.warning(f"The unlearned model {missing} is missing (deleted from the results folder?): no "
                  "download; the scores above were computed while it was loaded.")
elif run.checkpoint:
    try:
        if "zip" not in run.cache:
            with st.spinner("Packing the unlearned model for its download..."):
                run.cache["zip"] = checkpoint_zip(run.checkpoint)
        archive = run.cache["zip"]
    except USER_ERRORS as error:
        right.warning(f"The unlearned model saved as {run.checkpoint} cannot be downloaded: {explain(error)}")
    else:
        right.download_button("Download the unlearned model (.zip)", archive,
                              download_name(model_label(run.model_path), run.method, ticket, "zip"),
                              "application/zip", key=f"download_{run.id}",
                              help=f"saved as {run.checkpoint}")

figures = result_figures(run)
VIEWS = {"Shifts and UIS": "per-task metric shifts and the UIS breakdown",
         "Conflicts": "gradient angles overall and per layer, subspace ranks",
         "Instances": "at-risk retain instances, predictions before and after",
         "Per class": "IoU per class and the change of the prediction matrix (segmentation-like tasks)",
         "Twin maps": "the images on one map per model: does the forget set move toward unseen data?",
         "Attack": "per-instance membership scores, a threshold, the ROC curve, TPR at 1% and 0.1% FPR",
         "Layer similarity": "linear CKA per layer and head: where the network changed"}
ADDRESSES = dict(zip(("shifts", "conflicts", "instances", "classes", "maps", "attack", "layers"),
                     VIEWS))  # ?view=conflicts
asked = st.query_params.get("view")
if "interference_view" not in st.session_state and asked is not None:  # opened from a link
    if asked.strip().lower() in ADDRESSES:
        st.session_state["interference_view"] = ADDRESSES[asked.strip().lower()]
    else:
        st.warning(f"The address names view '{asked}'; accepted: {', '.join(ADDRESSES)}. Showing "
                   f"{next(iter(VIEWS))}.")


@st.fragment
def views() -> None:
    """One view at a time, in a fragment: a change of view reruns and redraws only this part
    (the browser's drawing of Plotly charts is what a switch waits on)."""
    view = st.radio("View", list(VIEWS), horizontal=True, key="interference_view",
                    help=". ".join(f"{name}: {what}" for name, what in VIEWS.items()))
    share(view=next(address for address, name in ADDRESSES.items() if name == view))
    if view == "Shifts and UIS":
        st.plotly_chart(figures["shifts"], width="content", key="shifts")
        st.plotly_chart(figures["breakdown"], width="content", key="breakdown")
        if run.history:  # the losses the run reported, kept in the ledger
            if "losses" not in run.cache:
                run.cache["losses"] = loss_curves_figure(run.history).update_layout(title="Losses per step")
            st.plotly_chart(run.cache["losses"], width="content", key="losses")
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
    elif view == "Per class":
        per_class_view(run)
    elif view == "Twin maps":
        twin_maps_view(run)
    elif view == "Attack":
        attack_view(run)
    elif view == "Layer similarity":
        similarity_view(run)
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


views()
