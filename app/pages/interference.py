"""Interference page: what a finished run changed, per task and split, and why. At the top, the
run's verdict in one sentence and its scores (UIS v2 first, each with its definition); below, the
charts. A run's scores are computed once, under a status line, and kept beside the ledger
(`app.state.run_results`); every other computation shows a spinner. The run's one-page report
(HTML, prints to PDF) is a download here and on the History page."""

import streamlit as st

from app.charts import (
    KPIS,
    class_change_table,
    class_iou_figure,
    confusion_change_figure,
    geometry_table,
    loss_curves_figure,
    person_table,
    selected_ids,
    shown_number,
    split_table,
    twin_map_figure,
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


def per_class_view() -> None:
    """IoU per class on forget / retain / test for before, after and the oracle, and the change of
    the prediction matrix on a chosen split, for each segmentation-like task (computed once per run)."""
    from core.evaluation.per_class import class_confusions, confusion_change, per_class_table

    data = cached_data(run.model_path, run.data_root)
    if "per_class" not in run.cache:
        original, _ = cached_checkpoint(run.model_path)
        models = {"original": original, run.method: run.model}
        if run.oracle is not None:
            models["retrain"] = run.oracle
        with st.spinner("Counting each class's pixels on the forget, retain and test images..."):
            confusions = class_confusions(models, run.request, data)
        names = {name: task.class_names for name, task in data.train.tasks.items()}
        run.cache["per_class"] = (confusions, per_class_table(confusions, names))
    confusions, table = run.cache["per_class"]
    if table.empty:
        st.info("This model has no segmentation-like task (one whose metric counts classes), so there "
                "is no per-class view.")
        return
    tasks = list(dict.fromkeys(table["task"]))
    task = st.selectbox("Task", tasks, key="per_class_task") if len(tasks) > 1 else tasks[0]
    st.plotly_chart(class_iou_figure(table, task), width="stretch", key="class_iou")
    splits = list(dict.fromkeys(table[table["task"] == task]["split"]))
    left, right = st.columns(2)
    split = left.selectbox("Prediction matrix on", splits, key="per_class_split")
    after = right.selectbox("Change of", [m for m in dict.fromkeys(table["model"]) if m != "original"],
                            key="per_class_model",
                            format_func=lambda m: "the retrain oracle" if m == "retrain" else m)
    classes = list(dict.fromkeys(table[(table["task"] == task) & (table["model"] == "original")
                                       & (table["split"] == split)]["class"]))
    change = confusion_change(confusions, split, task, after)
    st.plotly_chart(confusion_change_figure(change, classes, f"{task} on {split}: share of each true "
                                            f"class's pixels predicted as each class, {after} minus before"),
                    width="content", key="confusion_change")
    st.caption("Each row is a true class and sums to 0: red where the model now predicts that class more "
               "often, blue where less. On the forget images a useful change moves them toward how "
               "the oracle treats them, while retain and test should barely change.")
    st.dataframe(class_change_table(table, task, run.method).style.format(precision=3), hide_index=True,
                 width="stretch")


MAP_SAMPLE = 64
"""Retain and unseen images drawn on the twin maps (the whole forget set is)."""


def twin_maps_view() -> None:
    """The forget set, a retain sample and unseen (test) images on one projection per model
    (original, unlearned, oracle), a selection linked across the panels with the selected
    images' pictures, and the measured per-image damage on the retain sample."""
    from core.evaluation.metrics import fixed_retain_sample
    from core.explore import distance_to_unseen, retain_damage, twin_map
    from core.requests import RequestError, parse_ids

    data = cached_data(run.model_path, run.data_root)
    if "maps" not in run.cache:
        original, _ = cached_checkpoint(run.model_path)
        models = {"original": original, run.method: run.model}
        if run.oracle is not None:
            models["retrain"] = run.oracle
        test_set, test_ids = data.held_out("test")
        retain = fixed_retain_sample(run.request, MAP_SAMPLE)
        try:
            with st.spinner("Projecting the images' features, one pass per model..."):
                frame = twin_map(models, data.train, {"forget": list(run.request.instances),
                                                      "retain": retain},
                                 unseen=(test_set, list(test_ids)[:MAP_SAMPLE]))
                damage = retain_damage(original, run.model, data.train, retain)
        except ValueError as error:  # a model without encoder features
            st.info(f"No twin maps for this model: {error}.")
            return
        run.cache["maps"] = (frame, distance_to_unseen(frame), damage)
    frame, distances, damage = run.cache["maps"]
    typed = st.text_input("Images to ring on every map (ids; or lasso points on a map)",
                          key="twin_selected_ids", placeholder="e.g. 1, 2, 5-7")
    try:
        selected = set(parse_ids(typed, set(frame["id"][frame["group"] != "unseen"])))
    except RequestError as error:
        st.warning(f"{error}")
        selected = set()
    event = st.session_state.get("twin_maps")
    if not selected and event and event.get("selection", {}).get("points"):
        selected = selected_ids(event["selection"]["points"])
    titles = {"original": "original", "retrain": "retrain oracle", run.method: f"after {run.method}"}
    st.plotly_chart(twin_map_figure(frame, sorted(selected), titles), on_select="rerun",
                    selection_mode=("lasso", "box"), key="twin_maps", width="stretch")
    st.caption(f"One projection for every panel: the principal components of the original's features "
               f"of these images, so a point moves only where a model's features of that image moved. "
               f"Red: the forget set; grey: {MAP_SAMPLE} retain images; blue: unseen images (test part).")
    st.dataframe(distances.pivot(index="group", columns="model", values="distance to unseen")
                 .reset_index().style.format(precision=2), hide_index=True)
    if selected:
        shown = sorted(selected)[:8]
        train = data.train
        known = [i for i in shown if i in set(train.ids)]
        if known:
            predictions = {"before": predict(cached_checkpoint(run.model_path)[0], train, known),
                           "after": predict(run.model, train, known)}
            batch = train.batch(known)
            for index, instance in enumerate(known):
                panels = instance_panels(train.tasks, batch, predictions, index)
                st.image([p for _, p in panels], caption=[f"{instance} {c}" for c, _ in panels], width=96)
    st.subheader("Measured damage on the retain sample")
    st.caption("Each task's primary metric per retain image before and after (higher is better); the most "
               "damaged images first.")
    st.dataframe(damage.style.format(precision=3), hide_index=True, width="stretch")


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
        per_class_view()
    elif view == "Twin maps":
        twin_maps_view()
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
