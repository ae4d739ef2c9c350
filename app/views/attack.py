"""The Attack view: per-instance membership scores of the forget, retain and unseen instances
under the original, the unlearned model and the oracle (`core.evaluation.attack`), their
distributions, a threshold with its true and false positive rates, the ROC curve with AUC and
TPR at 1% and 0.1% FPR, and the forget instances that stay most member-like, with pictures. For
a contrast, the same with runs A and B (`app.views.Shown`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from app.charts import attack_histogram, roc_figure, shown_number
from app.state import Run
from app.views import Shown, as_shown
from core.evaluation.attack import (
    GROUPS,
    LOW_FPRS,
    attack_scores,
    attack_summary,
    min_negatives,
    most_member_like,
    rates_at,
    roc_points,
)

RETAIN_SAMPLE = 64
"""Retain instances scored (`fixed_retain_sample`): the members of the population attack."""


def _scores(shown: Shown) -> pd.DataFrame:
    with st.spinner(f"Scoring the forget, {RETAIN_SAMPLE} retain and the unseen (test) instances under "
                    f"{', '.join(shown.titles.values())} (once)..."):
        return attack_scores(shown.models, shown.data(), shown.request, shown.reference,
                             retain_sample=RETAIN_SAMPLE)


def _groups(rows: pd.DataFrame, score: str, groups) -> list[np.ndarray]:
    """The `score` values of `rows` in each of `groups`, in that order."""
    return [rows.loc[rows["group"] == group, score].to_numpy() for group in groups]


def summary_table(scores: pd.DataFrame, score: str, titles: dict[str, str]) -> pd.DataFrame:
    """Per model and positive group (forget, retain) against the unseen instances: AUC and the
    TPR at each of `LOW_FPRS`."""
    rows = []
    for model in dict.fromkeys(scores["model"]):
        mine = scores[scores["model"] == model]
        forget, retain, unseen = _groups(mine, score, GROUPS)
        for group, positive in (("forget", forget), ("retain", retain)):
            summary = attack_summary(positive, unseen)
            rows.append({"model": titles.get(model, model), "members": group, "AUC": summary["auc"],
                         **{f"TPR at {fpr:.1%} FPR".replace(".0%", "%"):
                            summary[f"tpr_at_{fpr:.1%}".replace(".0%", "%")] for fpr in LOW_FPRS}})
    return pd.DataFrame(rows)


def attack_view(subject: Run | Shown) -> None:
    shown = as_shown(subject)
    scores = shown.keep("attack", lambda: _scores(shown), {"retain_sample": RETAIN_SAMPLE})
    titles, colours = shown.titles, shown.colours
    reference = "retrain oracle" if shown.oracle else "original model"
    if not shown.oracle:
        st.info("No retrain oracle is recorded for this request, so there is no oracle reference: the "
                "original is the calibration reference. Train the oracle with a run (Unlearn page) "
                "to see where a model that never saw the forget set scores.")
    kinds = {"loss_attack": "loss attack (the leaderboard's)",
             "calibrated": f"calibrated by the {reference} (LiRA-style)"}
    score = st.radio("Score", list(kinds), format_func=kinds.__getitem__, horizontal=True,
                     key="attack_score") or "loss_attack"
    if score == "loss_attack":
        st.caption("A logistic regression on the per-task log-losses, trained to tell the retain sample "
                   "(members) from unseen instances: each instance's member probability (out of fold for "
                   "retain and unseen). A hard forget instance scores low whether or not it was forgotten.")
    else:
        st.caption(f"Mean over tasks of log loss under the {reference} minus log loss under the model: each "
                   "instance against its own difficulty, so a hard instance is not taken for forgotten. "
                   + ("The oracle never saw the forget nor the unseen instances (it scores 0 everywhere): "
                      "a forgotten forget set scores like the unseen one." if shown.oracle else
                      "Without an oracle the reference is the original (it scores 0 everywhere): the score "
                      "reads how far each instance's loss moved from where it started; train the oracle "
                      "with the run for the membership reading."))
    charts = shown.cache.setdefault("attack_charts", {})
    if score not in charts:
        curves = pd.concat([roc_points(*_groups(rows, score, ("forget", "unseen"))).assign(model=model)
                            for model, rows in scores.groupby("model", sort=False)])
        charts[score] = (attack_histogram(scores, score, titles, colours),
                         roc_figure(curves, titles, colours), summary_table(scores, score, titles))
    histogram, roc, table = charts[score]
    st.plotly_chart(histogram, width="stretch", key="attack_histogram")

    models = list(dict.fromkeys(scores["model"]))
    model = st.selectbox("Threshold the scores of", models, index=models.index(shown.focus[0]),
                         format_func=titles.__getitem__, key="attack_model") or shown.focus[0]
    mine = scores[scores["model"] == model]
    group = dict(zip(GROUPS, _groups(mine, score, GROUPS)))
    low, high = float(mine[score].min()), float(mine[score].max())
    if high > low:
        start = float(np.clip(np.quantile(group["unseen"], 0.99), low, high))
        threshold = st.slider("Threshold: an instance is called a member when its score is at or above it",
                              low, high, start, step=(high - low) / 200, format="%.3f",
                              key=f"attack_threshold_{score}_{model}")
    else:
        threshold = low
    forget_tpr, fpr = rates_at(group["forget"], group["unseen"], threshold)
    retain_tpr, _ = rates_at(group["retain"], group["unseen"], threshold)
    tiles = st.columns(3)
    tiles[0].metric("TPR on forget", f"{forget_tpr:.1%}", help="share of forget instances called members")
    tiles[1].metric("TPR on retain", f"{retain_tpr:.1%}", help="share of retain instances called members")
    tiles[2].metric("FPR on unseen", f"{fpr:.1%}", help="share of unseen instances called members")

    st.plotly_chart(roc, width="stretch", key="attack_roc")
    st.dataframe(table.style.format(precision=3), hide_index=True, width="stretch")
    unseen = len(group["unseen"])
    thin = [fpr for fpr in LOW_FPRS if unseen < min_negatives(fpr)]
    rates = " and ".join(f"{fpr:.1%}" for fpr in thin)
    needed = " and ".join(str(min_negatives(fpr)) for fpr in thin)
    st.caption("Forget (or retain) instances against the unseen ones; AUC 0.5 = indistinguishable. The TPR "
               "at a low FPR is the best single threshold that stays within it (no interpolation). "
               + (f"With {unseen} unseen instances, {rates} FPR is less than one false positive ({needed} "
                  "would be needed): that column is the TPR at FPR 0, not a measured rate." if thin else ""))

    st.subheader("Forget instances that remain most member-like")
    ranked = most_member_like(scores, score, model)
    ranked.columns = ["id", *(titles.get(c, c) for c in ranked.columns[1:-1]), "unseen below"]
    st.dataframe(ranked.style.format(precision=3), hide_index=True, width="stretch")
    st.caption(f"Ranked by the score under {titles[model]}; 'unseen below': the share of unseen instances "
               "it scores lower (near 1 = still looks like training data).")
    picked = st.selectbox("Show a forget instance: its picture and each model's predictions",
                          ranked["id"].tolist(), key="attack_instance")
    if picked is not None:
        panels = shown.pictures([int(picked)])[int(picked)]
        st.image([p for _, p in panels], caption=[f"{picked} {c}" for c, _ in panels], width=96)
        st.caption(f"Scores of instance {picked}: " + ", ".join(
            f"{titles.get(m, m)} {shown_number(v, 3)}"
            for m, v in scores.loc[(scores["group"] == "forget") & (scores["id"] == picked)]
            .set_index("model")[score].items()))
