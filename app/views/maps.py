"""The Twin maps view: the forget set, a retain sample and unseen (test) images on one projection
per model (original, unlearned, oracle; `core.explore.twin_map`), a selection linked across the
panels with the selected images' pictures, each group's distance to the unseen images, and the
measured per-image damage on the retain sample."""

from __future__ import annotations

import streamlit as st

from app.charts import selected_ids, twin_map_figure
from app.state import Run, cached_data, instance_pictures, run_models
from core.evaluation.metrics import fixed_retain_sample
from core.explore import distance_to_unseen, retain_damage, twin_map
from core.requests import RequestError, parse_ids

SAMPLE = 64
"""Retain and unseen images drawn on the maps (the whole forget set is)."""
PICTURED = 8
"""Selected images shown with their pictures."""


def _maps(run: Run) -> tuple | None:
    """(map frame, distances, damage), or None (and a note) for a model without encoder features."""
    data = cached_data(run.model_path, run.data_root)
    models = run_models(run)
    test_set, test_ids = data.held_out("test")
    retain = fixed_retain_sample(run.request, SAMPLE)
    try:
        with st.spinner("Projecting the images' features, one pass per model..."):
            frame = twin_map(models, data.train, {"forget": list(run.request.instances), "retain": retain},
                             unseen=(test_set, list(test_ids)[:SAMPLE]))
            damage = retain_damage(models["original"], run.model, data.train, retain)
    except ValueError as error:  # a model without encoder features
        st.info(f"No twin maps for this model: {error}.")
        return None
    return frame, distance_to_unseen(frame), damage


def twin_maps_view(run: Run) -> None:
    if "maps" not in run.cache:
        run.cache["maps"] = _maps(run)
    if run.cache["maps"] is None:
        return
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
               f"Red: the forget set; grey: {SAMPLE} retain images; blue: unseen images (test part).")
    st.dataframe(distances.pivot(index="group", columns="model", values="distance to unseen")
                 .reset_index().style.format(precision=2), hide_index=True)
    train_ids = set(cached_data(run.model_path, run.data_root).train.ids)
    shown = [i for i in sorted(selected) if i in train_ids][:PICTURED]
    for instance, panels in instance_pictures(run, shown).items():
        st.image([p for _, p in panels], caption=[f"{instance} {c}" for c, _ in panels], width=96)
    st.subheader("Measured damage on the retain sample")
    st.caption("Each task's primary metric per retain image before and after (higher is better); the most "
               "damaged images first.")
    st.dataframe(damage.style.format(precision=3), hide_index=True, width="stretch")
