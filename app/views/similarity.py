"""The Layer similarity view: linear CKA between the unlearned and the original model (and the
oracle against both) per shared layer and per task head, on forget, retain and test instances
(`core.evaluation.similarity`): where in the network the change happened, and whether the kept
tasks' heads moved. For a contrast: A and B against the original, against each other and against
the oracle."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app.charts import cka_heatmap
from app.state import Run
from app.views import Shown, as_shown
from core.evaluation.similarity import layer_similarity

SAMPLE = 32
"""Instances per split (the forget set's first ones, a retain sample, test instances)."""


def _pairs(shown: Shown) -> list[tuple[str, str]]:
    """Each unlearned model against the original, A against B, then the oracle against the
    original and against each unlearned model."""
    pairs = [(name, "original") for name in shown.focus] + list(zip(shown.focus, shown.focus[1:]))
    if shown.oracle:
        pairs += [("retrain", "original")] + [("retrain", name) for name in shown.focus]
    return pairs


def _similarity(shown: Shown) -> pd.DataFrame:
    with st.spinner(f"Comparing the layers of {', '.join(shown.titles.values())} on forget, retain and "
                    "test instances (once)..."):
        return layer_similarity(shown.models, _pairs(shown), shown.data(), shown.request, sample=SAMPLE)


def similarity_view(subject: Run | Shown) -> None:
    shown = as_shown(subject)
    frame = shown.keep("similarity", lambda: _similarity(shown), {"sample": SAMPLE})
    if "cka_figure" not in shown.cache:
        named = frame.replace({"pair": {f"{a} vs {b}": f"{a} vs {b}".replace("retrain", "oracle")
                                        for a, b in _pairs(shown)}})
        shown.cache["cka_figure"] = cka_heatmap(named, "Linear CKA per layer: 1 = unchanged up to rotation "
                                                       "and scale")
    st.plotly_chart(shown.cache["cka_figure"], width="stretch", key="cka")
    counts = frame.groupby("split")["instances"].first()
    st.caption("Linear CKA (Kornblith et al., 2019) of each layer's activations on the same instances: "
               "the encoder's shared layers first, then each task's head and its output. A drop in a "
               "shared layer is a change every task sees; a drop only in a head is that task's. "
               f"Instances per split: {', '.join(f'{s} {n}' for s, n in counts.items())}"
               + ("; on a handful of instances CKA is near 1 by construction, read the forget column "
                  "with care." if counts.get("forget", SAMPLE) < 10 else "."))
    kept = shown.request.kept_tasks
    for name in shown.focus if kept else ():
        heads = frame[frame["part"].isin(kept) & (frame["pair"] == f"{name} vs original")]
        lowest = heads.loc[heads.groupby("part")["cka"].idxmin()]
        st.caption(f"Kept tasks' heads, lowest CKA of {shown.titles[name]} vs before: " + "; ".join(
            f"{row.part} {row.cka:.3f} ({row.layer}, {row.split})" for row in lowest.itertuples()))
    with st.expander("The values"):
        st.dataframe(frame.style.format(precision=3, subset=["cka"]), hide_index=True, width="stretch")
