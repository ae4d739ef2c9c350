"""Select page: explore the training instances and pick the forget set and the tasks to forget."""

import pandas as pd
import streamlit as st

from app.charts import instance_scatter, selected_ids
from app.state import current_or_stop, selection, set_selection, start_summary, target_tasks
from core.explore import instance_table, predict
from core.requests import ID_FORMAT, RequestError, parse_ids
from core.visual import instance_panels


@st.cache_data(show_spinner="Scoring every training instance (once per model)...")
def scored_instances(path: str, root: str, _model, _dataset, ids: tuple[int, ...]) -> pd.DataFrame:
    return instance_table(_model, _dataset, ids)[0]


@st.cache_data(max_entries=32, show_spinner="Predicting the forget instances...")
def thumbnails(weights: str, root: str, _model, _dataset, ids: tuple[int, ...]) -> list[list[tuple]]:
    """Per instance of `ids`: its pictures (input, truth and prediction per task) with captions,
    computed once per model and forget set, not on every click on the page."""
    batch, outputs = _dataset.batch(list(ids)), predict(_model, _dataset, list(ids))
    return [instance_panels(_dataset.tasks, batch, {"prediction": outputs}, index)
            for index in range(len(ids))]


@st.cache_resource(max_entries=16, show_spinner=False)
def instance_map(path: str, root: str, colour: str, picked: tuple[int, ...], _table: pd.DataFrame):
    """The instance map of a model's training instances, coloured by `colour`, with the forget
    set `picked` marked: built once per model, colour and forget set, not on every rerun."""
    return instance_scatter(_table, colour, list(picked))


THUMBNAILS = 8  # forget instances shown as thumbnails (input, truth and prediction per task)

st.title("Select")
start_summary()  # the sidebar line: model, forget set, tasks
loaded = current_or_stop()
train = loaded.data.train
table = scored_instances(loaded.path, str(train.root), loaded.model, train, tuple(loaded.data.train_ids))

st.session_state["target_tasks"] = target_tasks(loaded)
tasks = st.multiselect("Tasks to forget", loaded.tasks, key="target_tasks", persist_state="session")
kept = [t for t in loaded.tasks if t not in tasks]
st.markdown(f"**Partial-task unlearning:** forget {', '.join(tasks)}; keep {', '.join(kept)} on the same "
            "images." if kept else f"**Full-task unlearning:** forget the instances on every task "
            f"({', '.join(tasks)}).")

if table["x"].isna().all():
    st.info("This model provides no encoder features (`features` / `decode`, see "
            "core/models/protocol.py), so there is no instance map: pick rows of the table or type ids.")
colour = st.selectbox("Colour by", [c for c in table.columns if c not in ("id", "x", "y")], key="colour")
chart = st.plotly_chart(instance_map(loaded.path, str(train.root), colour, tuple(selection()), table),
                        on_select="rerun", key="scatter",
                        selection_mode=("points", "box", "lasso"))
st.caption("Lasso or box points on the map, tick rows of the table or type ids; then add them.")
rows = st.dataframe(table, on_select="rerun", selection_mode="multi-row", key="table", hide_index=True)
try:
    typed = parse_ids(st.text_input("Add ids", key="id_search", placeholder=ID_FORMAT), table["id"])
except RequestError as error:
    st.error(str(error))
    typed = None
on_map = selected_ids(chart.selection.points)
in_table = set(table["id"].iloc[rows.selection.rows].tolist())
picked = sorted(on_map | set(typed or []) | in_table)
if picked:  # counted as soon as a lasso, a box, a row or an id picks them
    st.markdown(f"Picked: {len(picked)} instances ({len(on_map)} on the map, {len(in_table)} in the "
                f"table, {len(typed or [])} typed)")
add, replace, clear = st.columns(3)
add.button("Add to forget set", on_click=set_selection, args=(selection() + picked,), disabled=typed is None)
replace.button("Replace forget set", on_click=set_selection, args=(picked,), disabled=typed is None)
clear.button("Clear", on_click=set_selection, args=([],))

st.subheader(f"Forget set: {len(selection())} instances")
st.session_state["forget_chips"] = selection()  # follows the forget set however it changed
st.multiselect("Forget set (remove an id with its ×)", selection(), key="forget_chips",
               on_change=lambda: set_selection(st.session_state["forget_chips"]),
               placeholder="Empty: pick points, rows or ids above.")
known = set(table["id"].tolist())
forgotten = [i for i in selection() if i in known]
shown = forgotten[:THUMBNAILS]
if len(forgotten) > len(shown):
    st.caption(f"Thumbnails of the first {len(shown)} of the {len(forgotten)} forget instances.")
if shown:
    pictured = thumbnails(loaded.card.weights_sha256 or loaded.path, str(train.root), loaded.model, train,
                          tuple(shown))
    for instance, panels in zip(shown, pictured):
        captions, pictures = zip(*panels)
        st.image(list(pictures), caption=[f"{instance} {c}" for c in captions], width=96)
