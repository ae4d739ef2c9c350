"""Per-instance membership scores and the attack's operating points (core.evaluation.attack),
on hand-made scores with hand-counted rates, and on a tiny model."""

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from core.evaluation.attack import (
    GROUPS,
    attack_scores,
    attack_summary,
    min_negatives,
    most_member_like,
    rates_at,
    roc_points,
    tpr_at_fpr,
)
from core.evaluation.mia import calibrated_scores, mia_from_features, population_scores

NEGATIVE = np.arange(100, dtype=float)  # unseen scores 0, 1, ..., 99
POSITIVE = np.r_[np.full(40, 200.0), np.full(30, 98.5), np.full(30, 10.0)]


def test_rates_at_a_threshold_count_scores_at_or_above_it():
    tpr, fpr = rates_at(np.array([0.9, 0.8, 0.3]), np.array([0.1, 0.5, 0.85, 0.2]), 0.7)
    assert (tpr, fpr) == (pytest.approx(2 / 3), pytest.approx(1 / 4))
    assert rates_at(np.array([0.9]), np.array([0.9]), 0.9) == (1.0, 1.0)  # ties count as positive


def test_tpr_at_fpr_is_the_best_threshold_within_the_budget_not_an_interpolation():
    # FPR 1%: a threshold in (98, 98.5] lets one unseen score (99) through and 70 forget scores
    assert tpr_at_fpr(POSITIVE, NEGATIVE, 0.01) == pytest.approx(0.7)
    # FPR 0.1% allows no false positive among 100: only the 40 scores above 99
    assert tpr_at_fpr(POSITIVE, NEGATIVE, 0.001) == pytest.approx(0.4)
    # between ROC points the figure stays at the lower point (a threshold, not a mix of two)
    assert tpr_at_fpr(POSITIVE, NEGATIVE, 0.015) == pytest.approx(0.7)
    assert tpr_at_fpr(POSITIVE, NEGATIVE, 1.0) == 1.0


def test_roc_points_match_sklearn_and_start_at_the_origin():
    points = roc_points(POSITIVE, NEGATIVE)
    assert list(points.columns) == ["fpr", "tpr", "threshold"]
    assert points.iloc[0][["fpr", "tpr"]].tolist() == [0.0, 0.0]
    assert points.iloc[-1][["fpr", "tpr"]].tolist() == [1.0, 1.0]
    assert (np.diff(points["fpr"]) >= 0).all() and (np.diff(points["tpr"]) >= 0).all()


def test_summary_says_when_too_few_unseen_instances_for_a_false_positive_rate():
    summary = attack_summary(POSITIVE, NEGATIVE)
    labels = np.r_[np.ones(len(POSITIVE)), np.zeros(len(NEGATIVE))]
    assert summary["auc"] == pytest.approx(roc_auc_score(labels, np.r_[POSITIVE, NEGATIVE]))
    assert summary["tpr_at_1%"] == pytest.approx(0.7) and summary["tpr_at_0.1%"] == pytest.approx(0.4)
    assert summary["enough_1%"] and not summary["enough_0.1%"]  # 100 unseen: 0.1% of them is 0.1
    assert min_negatives(0.01) == 100 and min_negatives(0.001) == 1000
    empty = attack_summary(np.array([]), NEGATIVE)
    assert math.isnan(empty["auc"]) and math.isnan(empty["tpr_at_1%"])


def test_population_scores_are_what_the_leaderboards_attack_reads():
    rng = np.random.default_rng(0)
    member, nonmember = rng.lognormal(-4, 0.3, (40, 2)), rng.lognormal(0, 0.3, (50, 2))
    forget = np.r_[rng.lognormal(-4, 0.3, (5, 2)), rng.lognormal(0, 0.3, (5, 2))]
    member_score, nonmember_score, forget_score = population_scores(member, nonmember, forget, seed=0)
    assert member_score.shape == (40,) and nonmember_score.shape == (50,) and forget_score.shape == (10,)
    assert forget_score[:5].min() > 0.9 and forget_score[5:].max() < 0.1  # remembered, then forgotten
    efficacy = mia_from_features(member, nonmember, forget, seed=0)["mia_efficacy"]
    assert efficacy == pytest.approx((forget_score < 0.5).mean())


def test_calibrated_scores_take_the_difficulty_out():
    hard, easy = np.array([[2.0, 4.0]]), np.array([[0.02, 0.04]])
    # a hard instance whose loss did not move scores as an easy one whose loss did not move
    assert calibrated_scores(hard, hard) == pytest.approx([0.0])
    assert calibrated_scores(easy, easy) == pytest.approx([0.0])
    assert calibrated_scores(easy, hard) == pytest.approx([np.log(100)])  # 100 times lower: member


def test_attack_scores_of_a_tiny_model_against_itself(tiny_model, indoor_data, indoor_request):
    request = indoor_request(3, False)
    models = {"original": tiny_model, "unlearned": tiny_model}
    frame = attack_scores(models, indoor_data, request, reference="original", retain_sample=6)
    assert list(frame.columns) == ["model", "group", "id", "loss_attack", "calibrated"]
    assert set(frame["group"]) == set(GROUPS) and set(frame["model"]) == set(models)
    forget = frame[(frame["group"] == "forget") & (frame["model"] == "unlearned")]
    assert sorted(forget["id"]) == sorted(request.instances)
    assert (frame["calibrated"] == 0).all()  # every model is its own reference here
    assert frame["loss_attack"].between(0, 1).all()
    with pytest.raises(ValueError, match="reference 'oracle'.*accepted: original, unlearned"):
        attack_scores(models, indoor_data, request, reference="oracle")


def test_most_member_like_ranks_the_forget_instances_of_one_model():
    rows = [("after", "forget", 1, 0.2), ("after", "forget", 2, 0.9), ("after", "forget", 3, 0.5),
            ("before", "forget", 1, 0.8), ("before", "forget", 2, 0.9), ("before", "forget", 3, 0.95),
            *[("after", "unseen", 10 + i, s) for i, s in enumerate((0.1, 0.3, 0.6, 0.95))],
            ("after", "retain", 20, 0.99)]
    frame = pd.DataFrame(rows, columns=["model", "group", "id", "loss_attack"])
    table = most_member_like(frame, "loss_attack", "after", top=2)
    assert list(table.columns) == ["id", "after", "before", "unseen below"]
    assert table["id"].tolist() == [2, 3]
    assert table["unseen below"].tolist() == [0.75, 0.5]  # 0.9 is above 3 of 4 unseen scores
    assert table["before"].tolist() == [0.9, 0.95]
