"""Membership inference on per-task losses (DESIGN section 6).

A logistic regression on standardized log-losses separates members (a fixed retain sample) from
non-members (test instances); applied to the forget instances it says whether they still look
like training data. Ideal after unlearning: MIA-efficacy high, forget AUC near 0.5 (and near the
retrain oracle's).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core.data.npy import split_calibration_test
from core.evaluation.metrics import fixed_retain_sample
from core.tasks import TaskSpec
from core.training import iterate_batches

_LOG_EPS = 1e-8


@torch.no_grad()
def loss_features(model: torch.nn.Module, dataset, ids: Sequence[int], tasks: Mapping[str, TaskSpec],
                  batch_size: int = 64) -> np.ndarray:
    """Per-instance loss of each task: (N, T) float64, rows in the order of `ids`, columns in
    the order of `tasks` ({name: spec}). The model runs in eval mode on its own device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    rows = []
    for batch in iterate_batches(dataset, ids, batch_size):
        outputs = model(batch["image"].to(device))
        rows.append(np.stack([spec.per_image_metrics(outputs[name], batch[name].to(device))["loss"]
                              .cpu().double().numpy() for name, spec in tasks.items()], axis=1))
    model.train(was_training)
    return np.concatenate(rows) if rows else np.zeros((0, len(tasks)))


def mia_from_features(member: np.ndarray, nonmember: np.ndarray, forget: np.ndarray, seed: int = 0,
                      folds: int = 5) -> dict[str, float]:
    """The attack on hand-made or measured losses.

    Args:
        member: (M, T) losses of training instances; nonmember: (N, T) of unseen instances;
            forget: (F, T) of the forget instances. Losses >= 0; the attack reads log(loss + 1e-8).
        seed: shuffles the StratifiedKFold folds; folds: at most this many (at most the smaller
            class size, at least 2).
    Returns:
        cv_auc: out-of-fold AUC of member vs non-member (how strong the attack is at all);
        mia_efficacy: share of forget instances predicted non-member by the attack fit on all
            members and non-members; forget_auc: AUC of the member probability of the forget
            instances (positives) against the out-of-fold probability of the non-members.
    """
    member, nonmember, forget = (np.log(np.asarray(a, dtype=np.float64) + _LOG_EPS)
                                 for a in (member, nonmember, forget))
    splits = min(folds, len(member), len(nonmember))
    if splits < 2:
        raise ValueError(f"the attack needs at least 2 members and 2 non-members, got {len(member)} "
                         f"and {len(nonmember)}; use a larger retain sample or val split")
    x = np.concatenate([member, nonmember])
    y = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
    attack = make_pipeline(StandardScaler(), LogisticRegression())
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    held_out = cross_val_predict(attack, x, y, cv=cv, method="predict_proba")[:, 1]
    attack.fit(x, y)
    forget_score = attack.predict_proba(forget)[:, 1]
    nonmember_score = held_out[len(member):]
    forget_auc = roc_auc_score(np.r_[np.ones(len(forget)), np.zeros(len(nonmember))],
                               np.r_[forget_score, nonmember_score])
    return {"mia_efficacy": float(np.mean(forget_score < 0.5)), "forget_auc": float(forget_auc),
            "cv_auc": float(roc_auc_score(y, held_out))}


def membership_inference(model: torch.nn.Module, data, request, retain_sample: int = 64,
                         seed: int = 0) -> dict[str, float]:
    """`mia_from_features` on `model`'s losses for the request's target tasks (all tasks in
    full mode): members = `fixed_retain_sample(request, retain_sample, seed)`, non-members = the
    val split's test ids, forget = the request's instances."""
    tasks = {name: data.train.tasks[name] for name in request.tasks}
    test_ids = split_calibration_test(data.val.ids)[1]
    return mia_from_features(
        loss_features(model, data.train, fixed_retain_sample(request, retain_sample, seed), tasks),
        loss_features(model, data.val, test_ids, tasks),
        loss_features(model, data.train, request.instances, tasks), seed=seed)
