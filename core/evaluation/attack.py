"""Per-instance membership scores and the attack's operating points (the Interference page's
Attack view; docs/ARCHITECTURE.md section 12.4).

Two scores per instance, both "higher = more member-like", both from `core.evaluation.mia`:

- "loss_attack": the population attack's member probability (`mia.population_scores`, the
  attack behind the leaderboard's MIA AUC): retain and unseen instances get out-of-fold
  probabilities, forget instances that of the attack fit on all of them;
- "calibrated": the reference attack's score (`mia.calibrated_scores`, LiRA-style offline with
  one reference), log loss_ref - log loss on each instance, so the instance's own difficulty is
  taken out: a hard instance, with a high loss under the reference too, is not taken for
  forgotten. The reference is the retrain oracle when the run has one (it never saw the forget
  nor the unseen instances: the OUT model of LiRA); else the original model, and the score then
  reads how far the instance's loss moved from where it started (the original scores 0).

Three groups: "forget" (the request's instances), "retain" (`fixed_retain_sample`, members the
attack is trained on) and "unseen" (the held-out test part of the val split). Operating points
(`rates_at`, `roc_points`, `tpr_at_fpr`, `attack_summary`) read positives (forget or retain)
against the unseen instances as negatives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch

from core.evaluation.metrics import fixed_retain_sample
from core.evaluation.mia import attack_features, calibrated_scores, population_scores
from core.requests import ForgetRequest

GROUPS = ("forget", "retain", "unseen")
SCORES = ("loss_attack", "calibrated")
LOW_FPRS = (0.01, 0.001)
"""The false positive rates the privacy literature reports beside AUC (TPR at 1% and 0.1%)."""


def rates_at(positive: np.ndarray, negative: np.ndarray, threshold: float) -> tuple[float, float]:
    """(TPR, FPR) of the rule "member when score >= threshold": the share of `positive` (P,)
    and of `negative` (N,) scores at or above it (NaN for an empty group)."""
    def share(scores):
        scores = np.asarray(scores, np.float64)
        return float((scores >= threshold).mean()) if len(scores) else math.nan

    return share(positive), share(negative)


def roc_points(positive: np.ndarray, negative: np.ndarray) -> pd.DataFrame:
    """The ROC curve of positives (P,) above negatives (N,): columns fpr, tpr, threshold from
    `sklearn.metrics.roc_curve` (every threshold kept; the first row is (0, 0) at +inf)."""
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    from sklearn.metrics import roc_curve  # sklearn's import costs seconds: on use only

    fpr, tpr, threshold = roc_curve(labels, np.r_[positive, negative], drop_intermediate=False)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": threshold})


def tpr_at_fpr(positive: np.ndarray, negative: np.ndarray, fpr: float) -> float:
    """The highest TPR that one threshold reaches with an FPR of at most `fpr`.

    No interpolation between ROC points: a point between two thresholds is only reached by
    mixing them at random, which no attacker's threshold does, so the figure stays at the
    lower point. With fewer than `min_negatives(fpr)` negatives no false positive fits in the
    budget, and the figure is the TPR at FPR 0 (`attack_summary` flags it). NaN when a group
    is empty.
    """
    if not len(positive) or not len(negative):
        return math.nan
    points = roc_points(positive, negative)
    return float(points.loc[points["fpr"] <= fpr + 1e-12, "tpr"].max())


def min_negatives(fpr: float) -> int:
    """The fewest negatives at which an FPR of `fpr` is one false positive: ceil(1 / fpr)."""
    return math.ceil(1 / fpr - 1e-9)


def attack_summary(positive: np.ndarray, negative: np.ndarray) -> dict[str, float | bool]:
    """auc, "tpr_at_1%", "tpr_at_0.1%" of positives (P,) above negatives (N,), and for each FPR
    "enough_1%" / "enough_0.1%": whether there are `min_negatives` of it (else the TPR is that
    at FPR 0, too few unseen instances to measure the rate). NaN figures for an empty group."""
    from sklearn.metrics import roc_auc_score  # on use only, as in roc_points

    both = len(positive) and len(negative)
    labels = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    out: dict[str, float | bool] = {
        "auc": float(roc_auc_score(labels, np.r_[positive, negative])) if both else math.nan}
    for fpr in LOW_FPRS:
        label = f"{fpr:.1%}".replace(".0%", "%")
        out[f"tpr_at_{label}"] = tpr_at_fpr(positive, negative, fpr)
        out[f"enough_{label}"] = len(negative) >= min_negatives(fpr)
    return out


def attack_scores(models: Mapping[str, torch.nn.Module], data, request: ForgetRequest, reference: str,
                  retain_sample: int = 64, seed: int = 0, heldout: str = "test") -> pd.DataFrame:
    """Both scores of every instance of the three groups under each model.

    Args:
        models: {name: model}, e.g. original, the unlearned model, the oracle.
        data: `UnlearningData` built from the full val split (`held_out` reads `heldout`).
        request: the forget request (its instances, target tasks and retain ids).
        reference: the name among `models` whose losses calibrate the "calibrated" score.
        retain_sample, seed, heldout: as `core.evaluation.mia.attack_features`.
    Returns:
        Rows model, group, id, loss_attack, calibrated: one per model and instance, groups in
        `GROUPS` order (ids of unseen instances are val-split ids).
    """
    if reference not in models:
        raise ValueError(f"the calibration reference {reference!r} is not among the models; accepted: "
                         f"{', '.join(models)}")
    features = {name: attack_features(model, data, request, retain_sample, seed, heldout)
                for name, model in models.items()}
    ids = {"forget": list(request.instances), "retain": fixed_retain_sample(request, retain_sample, seed),
           "unseen": list(data.held_out(heldout)[1])}
    frames = []
    for name, losses in features.items():
        member, nonmember, forget = population_scores(losses["member"], losses["nonmember"],
                                                      losses["forget"], seed=seed)
        loss_attack = {"forget": forget, "retain": member, "unseen": nonmember}
        for group, key in zip(GROUPS, ("forget", "member", "nonmember")):
            frames.append(pd.DataFrame({
                "model": name, "group": group, "id": ids[group], "loss_attack": loss_attack[group],
                "calibrated": calibrated_scores(losses[key], features[reference][key])}))
    return pd.concat(frames, ignore_index=True)



def most_member_like(scores: pd.DataFrame, score: str, model: str, top: int = 10) -> pd.DataFrame:
    """The forget instances that `model` still scores most member-like.

    Args:
        scores: `attack_scores`'s frame; score: one of `SCORES`; model: a name among its models.
    Returns:
        At most `top` rows, highest `model` score first: id, the score under each model (one
        column per model, in the frame's order), and "unseen below": the share of unseen
        instances that `model` scores lower than this one (1 = above every unseen instance).
    """
    forget = scores[scores["group"] == "forget"].pivot(index="id", columns="model", values=score)
    forget = forget[list(dict.fromkeys(scores["model"]))]
    unseen = np.sort(scores.loc[(scores["group"] == "unseen") & (scores["model"] == model), score].to_numpy())
    below = np.searchsorted(unseen, forget[model].to_numpy(), side="left") / max(len(unseen), 1)
    table = forget.assign(**{"unseen below": below}).sort_values(model, ascending=False, kind="stable")
    return table.head(top).reset_index().rename_axis(columns=None)
