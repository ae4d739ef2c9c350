"""The Layer similarity view: linear CKA between the unlearned and the original model (and the
oracle against both) per shared layer and per task head, on forget, retain and test instances
(`core.evaluation.similarity`): where in the network the change happened, and whether the kept
tasks' heads moved."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.charts import cka_heatmap
from app.state import Run, cached_data, kept_frame, run_models
from core.evaluation.similarity import layer_similarity

SAMPLE = 32
"""Instances per split (the forget set's first ones, a retain sample, test instances)."""


def _pairs(run: Run) -> list[tuple[str, str]]:
    pairs = [(run.method, "original")]
    if run.oracle is not None:
        pairs += [("retrain", "original"), ("retrain", run.method)]
    return pairs


def _similarity(run: Run) -> pd.DataFrame:
    models = run_models(run)
    with st.spinner(f"Comparing the layers of {', '.join(models)} on forget, retain and test instances "
                    "(once per run)..."):
        return layer_similarity(models, _pairs(run), cached_data(run.model_path, run.data_root),
                                run.request, sample=SAMPLE)


def similarity_view(run: Run) -> None:
    frame = kept_frame(run, "similarity", lambda: _similarity(run), sample=SAMPLE)
    if "cka_figure" not in run.cache:
        shown = frame.replace({"pair": {f"{a} vs {b}": f"{a} vs {b}".replace("retrain", "oracle")
                                        for a, b in _pairs(run)}})
        run.cache["cka_figure"] = cka_heatmap(shown, "Linear CKA per layer: 1 = unchanged up to rotation "
                                                     "and scale")
    st.plotly_chart(run.cache["cka_figure"], width="stretch", key="cka")
    counts = frame.groupby("split")["instances"].first()
    st.caption("Linear CKA (Kornblith et al., 2019) of each layer's activations on the same instances: "
               "the encoder's shared layers first, then each task's head and its output. A drop in a "
               "shared layer is a change every task sees; a drop only in a head is that task's. "
               f"Instances per split: {', '.join(f'{s} {n}' for s, n in counts.items())}"
               + ("; on a handful of instances CKA is near 1 by construction, read the forget column "
                  "with care." if counts.get("forget", SAMPLE) < 10 else "."))
    kept = run.request.kept_tasks
    if kept:
        heads = frame[frame["part"].isin(kept) & (frame["pair"] == f"{run.method} vs original")]
        lowest = heads.loc[heads.groupby("part")["cka"].idxmin()]
        st.caption("Kept tasks' heads, lowest CKA after vs before: " + "; ".join(
            f"{row.part} {row.cka:.3f} ({row.layer}, {row.split})" for row in lowest.itertuples()))
    with st.expander("The values"):
        st.dataframe(frame.style.format(precision=3, subset=["cka"]), hide_index=True, width="stretch")
