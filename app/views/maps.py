"""The Twin maps view: the forget set, a retain sample and unseen (test) images on one projection
per model (original, unlearned, oracle; `core.explore.twin_map`), a selection linked across the
panels with the selected images' pictures, each group's distance to the unseen images, and the
measured per-image damage on the retain sample (of each unlearned model: the run's, or A and B)."""

from __future__ import annotations

import streamlit as st

from app.charts import selected_ids, twin_map_figure
from app.state import Run
from app.views import Shown, as_shown
from core.evaluation.metrics import fixed_retain_sample
from core.explore import distance_to_unseen, retain_damage, twin_map
from core.requests import RequestError, parse_ids

SAMPLE = 64
"""Retain and unseen images drawn on the maps (the whole forget set is)."""
PICTURED = 8
"""Selected images shown with their pictures."""


def _maps(shown: Shown) -> tuple | None:
    """(map frame, distances, {unlearned model: damage}), or None (and a note) for a model
    without encoder features."""
    data = shown.data()
    test_set, test_ids = data.held_out("test")
    retain = fixed_retain_sample(shown.request, SAMPLE)
    try:
        with st.spinner("Projecting the images' features, one pass per model..."):
            frame = twin_map(shown.models, data.train,
                             {"forget": list(shown.request.instances), "retain": retain},
                             unseen=(test_set, list(test_ids)[:SAMPLE]))
            damage = {name: retain_damage(shown.models["original"], shown.models[name], data.train, retain)
                      for name in shown.focus}
    except ValueError as error:  # a model without encoder features
        st.info(f"No twin maps for this model: {error}.")
        return None
    return frame, distance_to_unseen(frame), damage


def twin_maps_view(subject: Run | Shown) -> None:
    shown = as_shown(subject)
    if "maps" not in shown.cache:
        shown.cache["maps"] = _maps(shown)
    if shown.cache["maps"] is None:
        return
    frame, distances, damage = shown.cache["maps"]
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
    st.plotly_chart(twin_map_figure(frame, sorted(selected), shown.titles, shown.colours), on_select="rerun",
                    selection_mode=("lasso", "box"), key="twin_maps", width="stretch")
    st.caption(f"One projection for every panel: the principal components of the original's features "
               f"of these images, so a point moves only where a model's features of that image moved. "
               f"Red: the forget set; grey: {SAMPLE} retain images; blue: unseen images (test part).")
    table = distances.pivot(index="group", columns="model", values="distance to unseen")
    st.dataframe(table[list(shown.models)].rename(columns=shown.titles).reset_index()
                 .style.format(precision=2), hide_index=True)
    train_ids = set(shown.data().train.ids)
    pictured = [i for i in sorted(selected) if i in train_ids][:PICTURED]
    for instance, panels in shown.pictures(pictured).items():
        st.image([p for _, p in panels], caption=[f"{instance} {c}" for c, _ in panels], width=96)
    st.subheader("Measured damage on the retain sample")
    st.caption("Each task's primary metric per retain image before and after (higher is better); the most "
               "damaged images first." + (" One table per run, A then B." if len(damage) > 1 else ""))
    for name, table in damage.items():
        if len(damage) > 1:
            st.markdown(f"**{shown.titles[name]}**")
        st.dataframe(table.style.format(precision=3), hide_index=True, width="stretch")
