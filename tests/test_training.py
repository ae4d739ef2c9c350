import pytest
import torch

from core.models import build_model
from core.training import (
    TrainConfig,
    evaluate,
    pair_weights,
    seed_everything,
    train,
    train_checkpoint,
    trained_ids,
)

FAST = {"epochs": 2, "batch_size": 4, "lr": 1e-3, "device": "cpu"}


def _fresh(dataset, seed=0):
    seed_everything(seed)
    return build_model({"name": "small_cnn", "args": {"width": 4}}, list(dataset.tasks.values()))


def test_pair_weights_zero_exactly_the_masked_pairs():
    ids = torch.tensor([3, 7, 9])
    weights = pair_weights(ids, ["depth", "segmentation"], {"depth": {7, 100}})
    assert weights["depth"].tolist() == [1.0, 0.0, 1.0]
    assert weights["segmentation"].tolist() == [1.0, 1.0, 1.0]


def test_training_is_reproducible_and_lowers_the_loss(tiny_source, use_cache):
    dataset = tiny_source.open("train")
    config = TrainConfig(**{**FAST, "epochs": 4})
    first, second = _fresh(dataset), _fresh(dataset)
    history = train(first, dataset, config)
    train(second, dataset, config)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    task = next(iter(dataset.tasks))
    assert history[-1][task] < history[0][task]
    assert not first.training


def test_a_fully_masked_task_gets_no_gradient(indoor_source, use_cache):
    dataset = indoor_source.open("train")
    model = _fresh(dataset)
    before = [p.clone() for p in model.task_parameters("depth")]
    train(model, dataset, TrainConfig(**FAST), masked_pairs={"depth": set(dataset.ids)})
    assert all(torch.equal(a, b) for a, b in zip(before, model.task_parameters("depth")))


def test_masking_a_pair_changes_the_result(indoor_source, use_cache):
    dataset = indoor_source.open("train")
    plain, masked = _fresh(dataset), _fresh(dataset)
    train(plain, dataset, TrainConfig(**FAST))
    train(masked, dataset, TrainConfig(**FAST), masked_pairs={"depth": {dataset.ids[0]}})
    assert any(not torch.equal(a, b) for a, b in zip(plain.parameters(), masked.parameters()))


def test_fully_masked_instances_never_enter_a_batch(indoor_source, use_cache):
    """The full-mode oracle: masking every task of some instances is training without them, so
    BatchNorm's running statistics (and every weight) equal those of training on the others."""
    dataset = indoor_source.open("train")
    gone = set(dataset.ids[::3])
    kept = [i for i in dataset.ids if i not in gone]
    assert trained_ids(dataset.ids, list(dataset.tasks), {t: gone for t in dataset.tasks}) == kept
    assert trained_ids(dataset.ids, list(dataset.tasks), {"depth": gone}) == list(dataset.ids)
    masked, without = _fresh(dataset), _fresh(dataset)
    train(masked, dataset, TrainConfig(**FAST), masked_pairs={t: gone for t in dataset.tasks})
    train(without, dataset.subset(kept), TrainConfig(**FAST))
    stats = [name for name in masked.state_dict() if name.endswith(("running_mean", "running_var"))]
    assert stats
    for name, value in masked.state_dict().items():
        assert torch.equal(value, without.state_dict()[name]), name
    with pytest.raises(ValueError, match="nothing is left"):
        train(_fresh(dataset), dataset, TrainConfig(**FAST),
              masked_pairs={t: set(dataset.ids) for t in dataset.tasks})


def test_unknown_masked_task_is_named(indoor_source, use_cache):
    dataset = indoor_source.open("train")
    with pytest.raises(ValueError, match="'colour'"):
        train(_fresh(dataset), dataset, TrainConfig(**FAST), masked_pairs={"colour": {1}})


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="epochs must be >= 1, got 0"):
        TrainConfig(epochs=0)


def test_evaluate_matches_the_task_accumulators(indoor_source, use_cache):
    dataset = indoor_source.open("val")
    model = _fresh(dataset)
    metrics = evaluate(model, dataset, batch_size=3, device="cpu")
    batch = dataset.batch(dataset.ids)
    with torch.no_grad():
        out = model.eval()(batch["image"])
    for name, task in dataset.tasks.items():
        accumulator = task.accumulator()
        accumulator.update(out[name], batch[name])
        expected = accumulator.compute()
        assert metrics[name] == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_train_checkpoint_records_ids_metrics_and_data(indoor_source, use_cache):
    architecture = {"name": "small_cnn", "args": {"width": 4}}
    model, card = train_checkpoint(indoor_source, architecture, TrainConfig(**FAST))
    assert card.train_ids == indoor_source.open("train").ids
    assert set(card.metrics) == {"train", "val", "trivial_val"}
    assert set(card.metrics["val"]) == set(model.tasks)
    assert card.training["data"]["benchmark"] == "synthetic-indoor"
    assert card.training["epochs"] == 2
