"""Regression tests on the shipped sample models: they load in one line, reproduce their cards'
val metrics on freshly generated data, have learned every task, and remember their training set."""

import pytest

from core import load_sample
from core.checkpoints import SAMPLE_MODELS_DIR
from core.data.sources import DataSource
from core.training import evaluate

SAMPLES = ["synthetic-indoor", "synthetic-street"]


def test_both_samples_ship_and_stay_small():
    for name in SAMPLES:
        weights = SAMPLE_MODELS_DIR / f"{name}.safetensors"
        assert weights.is_file() and (SAMPLE_MODELS_DIR / f"{name}.json").is_file()
        assert weights.stat().st_size < 8 * 2**20


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_reproduces_its_card_on_val(name, use_cache):
    model, card = load_sample(name)
    val = DataSource.from_dict(card.training["data"]).open("val")
    metrics = evaluate(model, val, device="cpu")
    for task, values in card.metrics["val"].items():
        assert metrics[task] == pytest.approx(values, rel=1e-3, abs=1e-3), task


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_learned_every_task_and_memorised_its_training_set(name):
    _, card = load_sample(name)
    gaps = []
    for task in card.task_specs():
        train = card.metrics["train"][task.name][task.primary]
        val = card.metrics["val"][task.name][task.primary]
        trivial = card.metrics["trivial_val"][task.name][task.primary]
        assert val > trivial + 0.1, (task.name, val, trivial)
        assert train - val >= 0.05, (task.name, train, val)
        gaps.append(train - val)
    assert sum(gaps) / len(gaps) >= 0.10
