import numpy as np
import pytest

from core.evaluation import loss_features, mia_from_features
from core.evaluation.mia import reference_attack


def _losses(rng, scale, n=60, tasks=2):
    return rng.lognormal(mean=np.log(scale), sigma=0.3, size=(n, tasks))


def test_separable_losses_are_detected():
    rng = np.random.default_rng(0)
    member, nonmember = _losses(rng, 0.01), _losses(rng, 1.0)
    remembered = mia_from_features(member, nonmember, _losses(rng, 0.01, n=20))
    assert remembered["cv_auc"] > 0.95
    assert remembered["forget_auc"] > 0.95 and remembered["mia_efficacy"] < 0.1
    forgotten = mia_from_features(member, nonmember, _losses(rng, 1.0, n=20))
    assert forgotten["mia_efficacy"] > 0.9 and abs(forgotten["forget_auc"] - 0.5) < 0.2


def test_identical_distributions_give_chance():
    rng = np.random.default_rng(1)
    scores = mia_from_features(_losses(rng, 0.5, n=200), _losses(rng, 0.5, n=200),
                               _losses(rng, 0.5, n=200), seed=0)
    assert abs(scores["cv_auc"] - 0.5) < 0.1
    assert abs(scores["forget_auc"] - 0.5) < 0.1


def test_deterministic_and_zero_losses_ok():
    rng = np.random.default_rng(2)
    member = np.vstack([np.zeros((3, 1)), _losses(rng, 0.1, n=10, tasks=1)])
    args = (member, _losses(rng, 1.0, n=10, tasks=1), _losses(rng, 0.1, n=4, tasks=1))
    assert mia_from_features(*args, seed=5) == mia_from_features(*args, seed=5)


def test_too_few_instances():
    with pytest.raises(ValueError, match="at least 2 members"):
        mia_from_features(np.ones((1, 1)), np.ones((5, 1)), np.ones((1, 1)))


def test_loss_features_shape(tiny_model, indoor_source, use_cache):
    train = indoor_source.open("train")
    tasks = dict(train.tasks)
    features = loss_features(tiny_model, train, train.ids[:5], tasks, batch_size=2)
    assert features.shape == (5, len(tasks)) and np.all(features >= 0)
    np.testing.assert_allclose(features[1:3], loss_features(tiny_model, train, train.ids[1:3], tasks),
                               rtol=1e-5)


def test_efficacy_is_not_tilted_by_unequal_classes():
    # 10 members, 200 non-members, the same loss distribution: a balanced attack calls about
    # half of the forget instances non-members, not nearly all of them
    rng = np.random.default_rng(3)
    scores = mia_from_features(_losses(rng, 0.5, n=10), _losses(rng, 0.5, n=200), _losses(rng, 0.5, n=200))
    assert 0.25 < scores["mia_efficacy"] < 0.75
    assert scores["mia_efficacy_low"] <= scores["mia_efficacy"] <= scores["mia_efficacy_high"]
    assert scores["forget_auc_low"] <= scores["forget_auc"] <= scores["forget_auc_high"]


def test_reference_attack_calibrates_each_instance():
    rng = np.random.default_rng(4)
    # instances differ a lot in difficulty; the reference model (never saw them) gives each its
    # own level; a model that remembers the forget set has 10x lower loss on it
    difficulty_forget, difficulty_test = _losses(rng, 1.0, n=40), _losses(rng, 1.0, n=40)
    remembered = reference_attack(difficulty_forget / 10, difficulty_test, difficulty_forget, difficulty_test)
    assert remembered["ref_auc"] == 1.0 and remembered["ref_auc_low"] == pytest.approx(1.0)
    forgotten = reference_attack(difficulty_forget, difficulty_test, difficulty_forget, difficulty_test)
    assert forgotten["ref_auc"] == 0.5
    with pytest.raises(ValueError, match="same instances"):
        reference_attack(difficulty_forget, difficulty_test, difficulty_forget[:3], difficulty_test)
