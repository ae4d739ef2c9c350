"""Membership inference on per-task losses (docs/ARCHITECTURE.md section 12.4).

Two attacks, both read on the forget instances against unseen (held-out) instances:

- the population attack: a logistic regression on standardized log-losses, with balanced class
  weights, separates members (a fixed retain sample) from non-members (held-out val instances);
  applied to the forget instances it says whether they still look like training data.
  MIA-efficacy = share of forget instances predicted non-member; forget AUC = AUC of the forget
  instances' member probability against the non-members' out-of-fold probability.
- the reference attack (LiRA-style, offline): each instance's loss is calibrated by its
  difficulty, score = mean over tasks of log loss_ref(x) - log loss_model(x), with a reference
  model that never saw x (the retrain oracle never saw the forget pairs, nor the held-out
  instances). A forget instance the model still remembers has a lower loss than the reference
  gives it; a forgotten one looks like an unseen one, so the AUC of forget vs non-member scores
  near 0.5 means the forget set is indistinguishable from unseen data even instance by instance.
  (The oracle compared with itself scores exactly 0.5.)

Every AUC and the efficacy come with a 95% bootstrap interval (`core.evaluation.stats`). Ideal
after unlearning: forget AUC near 0.5 and near the retrain oracle's, reference AUC near 0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from core.evaluation.metrics import fixed_retain_sample
from core.evaluation.stats import bootstrap_auc, bootstrap_mean
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


def population_scores(member: np.ndarray, nonmember: np.ndarray, forget: np.ndarray, seed: int = 0,
                      folds: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The population attack's member probability of every instance.

    Args: as `mia_from_features`.
    Returns:
        (M,) out-of-fold probabilities of the members, (N,) out-of-fold probabilities of the
        non-members (each from an attack fit without it), (F,) probabilities of the forget
        instances from the attack fit on all members and non-members (balanced class weights).
    """
    member, nonmember, forget = (np.log(np.asarray(a, dtype=np.float64) + _LOG_EPS)
                                 for a in (member, nonmember, forget))
    splits = min(folds, len(member), len(nonmember))
    if splits < 2:
        raise ValueError(f"the attack needs at least 2 members and 2 non-members, got {len(member)} "
                         f"and {len(nonmember)}; use a larger retain sample or val split")
    x = np.concatenate([member, nonmember])
    y = np.r_[np.ones(len(member)), np.zeros(len(nonmember))]
    from sklearn.linear_model import LogisticRegression  # sklearn's import costs seconds: on use only
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    attack = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced"))
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    held_out = cross_val_predict(attack, x, y, cv=cv, method="predict_proba")[:, 1]
    attack.fit(x, y)
    forget_score = attack.predict_proba(forget)[:, 1] if len(forget) else np.zeros(0)
    return held_out[:len(member)], held_out[len(member):], forget_score


def mia_from_features(member: np.ndarray, nonmember: np.ndarray, forget: np.ndarray, seed: int = 0,
                      folds: int = 5) -> dict[str, float]:
    """The population attack on hand-made or measured losses (`population_scores`).

    Args:
        member: (M, T) losses of training instances; nonmember: (N, T) of unseen instances;
            forget: (F, T) of the forget instances. Losses >= 0; the attack reads log(loss + 1e-8).
        seed: shuffles the StratifiedKFold folds and seeds the bootstrap; folds: at most this
            many (at most the smaller class size, at least 2).
    Returns:
        cv_auc: out-of-fold AUC of member vs non-member (how strong the attack is at all);
        mia_efficacy (with mia_efficacy_low / _high): share of forget instances predicted
            non-member by the attack fit on all members and non-members with balanced class
            weights (so an unequal count of members and non-members does not tilt it);
        forget_auc (with forget_auc_low / _high): AUC of the member probability of the forget
            instances (positives) against the out-of-fold probability of the non-members.
    """
    from sklearn.metrics import roc_auc_score  # on use only, as in population_scores

    member_score, nonmember_score, forget_score = population_scores(member, nonmember, forget, seed, folds)
    auc, auc_low, auc_high = bootstrap_auc(forget_score, nonmember_score, seed=seed)
    efficacy, eff_low, eff_high = bootstrap_mean((forget_score < 0.5).astype(np.float64), 2000, seed)
    y = np.r_[np.ones(len(member_score)), np.zeros(len(nonmember_score))]
    return {"mia_efficacy": efficacy, "mia_efficacy_low": eff_low, "mia_efficacy_high": eff_high,
            "forget_auc": auc, "forget_auc_low": auc_low, "forget_auc_high": auc_high,
            "cv_auc": float(roc_auc_score(y, np.r_[member_score, nonmember_score]))}


def calibrated_scores(loss: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The reference attack's score of each instance: (n,) mean over tasks of
    log(loss_ref) - log(loss), from (n, T) losses of the attacked model and of the reference.
    Each instance is measured against its own difficulty (its loss under the reference): a
    hard instance with a high loss under both scores 0, as an easy one that did not move."""
    return (np.log(np.asarray(ref, np.float64) + _LOG_EPS)
            - np.log(np.asarray(loss, np.float64) + _LOG_EPS)).mean(axis=1)


def reference_attack(forget: np.ndarray, nonmember: np.ndarray, forget_ref: np.ndarray,
                     nonmember_ref: np.ndarray, seed: int = 0) -> dict[str, float]:
    """The reference attack on losses: score = `calibrated_scores`, the mean over tasks of
    log(loss_ref) - log(loss).

    Args:
        forget, nonmember: (F, T) and (N, T) losses of the attacked model; forget_ref,
            nonmember_ref: the same instances' losses under a reference model that saw none of
            them (e.g. the retrain oracle).
    Returns:
        ref_auc (with ref_auc_low / _high): AUC of the forget scores above the non-member
        scores; 0.5 = the forget instances look exactly as unseen as unseen data.
    """
    for name, a, b in (("forget", forget, forget_ref), ("nonmember", nonmember, nonmember_ref)):
        if np.shape(a) != np.shape(b):
            raise ValueError(f"{name} losses {np.shape(a)} and their reference losses {np.shape(b)} "
                             "must describe the same instances and tasks")
    auc, low, high = bootstrap_auc(calibrated_scores(forget, forget_ref),
                                   calibrated_scores(nonmember, nonmember_ref), seed=seed)
    return {"ref_auc": auc, "ref_auc_low": low, "ref_auc_high": high}


def attack_features(model: torch.nn.Module, data, request, retain_sample: int = 64, seed: int = 0,
                    heldout: str = "test") -> dict[str, np.ndarray]:
    """{"member", "nonmember", "forget": (n, T) losses} of `model` on the request's target tasks
    (all tasks in full mode): members = `fixed_retain_sample(request, retain_sample, seed)`,
    non-members = the `heldout` part of the val split (`UnlearningData.held_out`), forget = the
    request's instances."""
    tasks = {name: data.train.tasks[name] for name in request.tasks}
    val, heldout_ids = data.held_out(heldout)
    return {"member": loss_features(model, data.train, fixed_retain_sample(request, retain_sample, seed),
                                    tasks),
            "nonmember": loss_features(model, val, heldout_ids, tasks),
            "forget": loss_features(model, data.train, request.instances, tasks)}


def membership_inference(model: torch.nn.Module, data, request, retain_sample: int = 64, seed: int = 0,
                         heldout: str = "test",
                         reference: Mapping[str, np.ndarray] | None = None) -> dict[str, float]:
    """Both attacks on `model` (`attack_features`): the keys of `mia_from_features`, and those
    of `reference_attack` when `reference` (the `attack_features` of a model that never saw the
    forget instances, e.g. the retrain oracle) is given, else ref_auc* = NaN."""
    features = attack_features(model, data, request, retain_sample, seed, heldout)
    out = mia_from_features(features["member"], features["nonmember"], features["forget"], seed=seed)
    if reference is None:
        return {**out, "ref_auc": np.nan, "ref_auc_low": np.nan, "ref_auc_high": np.nan}
    return {**out, **reference_attack(features["forget"], features["nonmember"], reference["forget"],
                                      reference["nonmember"], seed=seed)}
