import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.checkpoints import (
    CheckpointError,
    ModelCard,
    content_name,
    load_checkpoint,
    load_sample,
    read_card,
    save_checkpoint,
)


def _card(model) -> ModelCard:
    return ModelCard(benchmark="synthetic-indoor", tasks=[], architecture={},
                     train_ids=[0, 1, 2], metrics={"val": {"depth": {"delta1": 0.5}}})


def _resign(path):
    """Give the card the hash of whatever its weights file now holds (an attacker could)."""
    import hashlib

    card = json.loads(path.with_suffix(".json").read_text())
    card["weights_sha256"] = hashlib.sha256(path.with_suffix(".safetensors").read_bytes()).hexdigest()
    path.with_suffix(".json").write_text(json.dumps(card))


def _save(model, tmp_path):
    save_checkpoint(model, _card(model), tmp_path / "m")
    return tmp_path / "m"


def test_round_trip_restores_weights_and_card(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path)
    loaded, card = load_checkpoint(path.with_suffix(".safetensors"))
    for (name, a), (_, b) in zip(tiny_model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert card.train_ids == [0, 1, 2]
    assert [t["name"] for t in card.tasks] == list(tiny_model.tasks)
    assert card.versions["torch"] == torch.__version__
    assert len(card.weights_sha256) == 64
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(loaded(x)["depth"], tiny_model(x)["depth"])


def test_truncated_weights_are_refused(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path)
    weights = path.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_checkpoint(path)
    _resign(path)
    with pytest.raises(CheckpointError, match="truncated or not safetensors"):
        load_checkpoint(path)


def test_a_card_without_a_weights_hash_is_refused(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["weights_sha256"] = ""
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="has no weights_sha256"):
        load_checkpoint(path)


def test_nan_weights_and_huge_cards_are_refused(tiny_model, tmp_path, monkeypatch):
    from core import checkpoints

    path = _save(tiny_model, tmp_path)
    with torch.no_grad():
        next(tiny_model.parameters()).fill_(float("nan"))
    save_checkpoint(tiny_model, _card(tiny_model), tmp_path / "nan")
    with pytest.raises(CheckpointError, match="holds NaN or Inf in"):
        load_checkpoint(tmp_path / "nan")
    monkeypatch.setattr(checkpoints, "MAX_CARD_BYTES", 100)
    with pytest.raises(CheckpointError, match="a card is at most"):
        read_card(path)


def test_the_card_shapes_are_checked_before_the_model_is_allocated(tiny_model, tmp_path, monkeypatch):
    from core import checkpoints

    path = _save(tiny_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["architecture"]["args"]["width"] = 512  # would be large; refused on the meta device
    path.with_suffix(".json").write_text(json.dumps(card))
    built, real_build = [], checkpoints.build_model

    def recording_build(*args):
        model = real_build(*args)
        built.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(checkpoints, "build_model", recording_build)
    with pytest.raises(CheckpointError, match="shape mismatches"):
        load_checkpoint(path)
    assert built == ["meta"]  # refused before a real model was built


def test_weights_that_do_not_match_the_card_are_named(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["architecture"]["args"]["width"] = 8
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="shape mismatches.*encoder"):
        load_checkpoint(path)


def test_unknown_task_kind_and_bad_json_are_refused(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["tasks"][0]["kind"] = "optical_flow"
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="optical_flow"):
        read_card(path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_card(path)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent")


@pytest.mark.parametrize("text, message", [
    ('{"tasks": ' + "[" * 100_000 + "]" * 100_000 + "}",
     r"model card .*m\.json is nested (too|deeper)"),
    ('{"train_ids": [' + "7" * 5000 + "]}", r"model card .*m\.json is not valid JSON: .*5000 digits"),
    ('{"tasks": [{"name": "../x", "kind": "depth", "channels": 1}], "benchmark": "b", '
     '"architecture": {"name": "small_cnn"}}', r"model card .*m\.json has a bad task: task name "
                                               r"'\.\./x' is not accepted"),
])
def test_a_card_that_cannot_be_read_is_named(tiny_model, tmp_path, text, message):
    path = _save(tiny_model, tmp_path)
    path.with_suffix(".json").write_text(text)
    with pytest.raises(CheckpointError, match=message):
        read_card(path)


def test_a_pickle_is_never_loaded(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path)
    torch.save(tiny_model.state_dict(), path.with_suffix(".safetensors"))
    _resign(path)
    with pytest.raises(CheckpointError, match="not safetensors"):
        load_checkpoint(path)


def test_unknown_card_fields_are_refused(tiny_model, tmp_path):
    path = _save(tiny_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["__reduce__"] = "os.system"
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="__reduce__"):
        read_card(path)


def test_missing_sample_model_lists_the_shipped_ones():
    with pytest.raises(CheckpointError, match="no sample model 'imagenet'"):
        load_sample("imagenet")


def test_checkpoint_paths_keep_dots_in_the_name(tmp_path):
    from core.checkpoints import checkpoint_paths

    for name in ("indoor__r0.1__s1", "indoor__r0.1__s1.json", "indoor__r0.1__s1.safetensors"):
        weights, card = checkpoint_paths(tmp_path / name)
        assert (weights.name, card.name) == ("indoor__r0.1__s1.safetensors", "indoor__r0.1__s1.json")
    assert checkpoint_paths("a/r0.01")[0] != checkpoint_paths("a/r0.1")[0]


@pytest.mark.parametrize("field, value, message", [
    ("training", [1, 2], "'training' must be dict, got list"),
    ("train_ids", "all", "'train_ids' must be list"),
    ("train_ids", [1, "2"], "must list integer instance ids"),
    ("tasks", [], "must list at least one task"),
    ("architecture", "small_cnn", "'architecture' must be dict"),
    ("architecture", {"name": 3}, "must have a string \"name\""),
    ("architecture", {"name": "small_cnn", "args": [4]}, "args must be an object"),
    ("parent", 7, "'parent' must be str or null"),
])
def test_foreign_card_fields_of_the_wrong_type_are_named(tiny_model, tmp_path, field, value, message):
    path = _save(tiny_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card[field] = value
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_a_card_without_training_data_needs_the_dataset_named(tiny_model, tmp_path, indoor_source,
                                                               use_cache):
    from core.data import DatasetError
    from core.unlearning import UnlearningData

    path = _save(tiny_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card["train_ids"] = []
    path.with_suffix(".json").write_text(json.dumps(card))
    _, card = load_checkpoint(path)
    with pytest.raises(DatasetError, match="records no training data .*--data ROOT"):
        UnlearningData.from_card(card)
    data = UnlearningData.from_card(card, data_root=str(indoor_source.resolve()))
    assert list(data.train.tasks) == list(tiny_model.tasks)
    assert data.train_ids == list(data.train.ids)  # no train_ids in the card: the whole split


def test_saving_is_atomic_and_keeps_or_sets_aside_an_existing_checkpoint(tiny_model, tmp_path):
    first = save_checkpoint(tiny_model, _card(tiny_model), tmp_path / "m")
    with pytest.raises(CheckpointError, match="already exists"):
        save_checkpoint(tiny_model, _card(tiny_model), tmp_path / "m", if_exists="refuse")
    beside = save_checkpoint(tiny_model, _card(tiny_model), tmp_path / "m", if_exists="beside")
    assert beside != first and beside.name.startswith("m-") and load_checkpoint(beside)
    assert load_checkpoint(first)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary file left behind


def test_a_content_addressed_save_names_the_weights_by_their_hash_and_keeps_one_copy(tiny_model, tmp_path):
    store = tmp_path / "results"
    first = save_checkpoint(tiny_model, _card(tiny_model), store / "anything", if_exists="content")
    card = read_card(first)
    assert first.stem == card.weights_sha256[:16] == content_name(card.weights_sha256)
    again = _card(tiny_model)
    again.train_ids = [0, 1]  # another run with the same weights: the first card stays
    assert save_checkpoint(tiny_model, again, store / "other", if_exists="content") == first
    assert read_card(first).train_ids == [0, 1, 2] and len(list(store.iterdir())) == 2
    with torch.no_grad():
        next(tiny_model.parameters()).add_(1.0)
    changed = save_checkpoint(tiny_model, _card(tiny_model), store / "x", if_exists="content")
    assert changed != first and load_checkpoint(changed) and load_checkpoint(first)
    assert not list(store.glob(".*.tmp"))


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tiny_model, tmp_path, monkeypatch):
    from core import checkpoints

    path = _save(tiny_model, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints, "_sha256", fail)  # after the weights, before the card
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tiny_model, _card(tiny_model), path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


_SCALARS = st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=5)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["benchmark", "tasks", "architecture", "training", "train_ids", "metrics",
                              "parent", "request", "created", "weights_sha256", "card_version"]),
       value=_JSON)
def test_any_card_field_value_is_read_or_refused_by_name(tiny_model, tmp_path, field, value):
    """Whatever JSON a foreign card holds in a field, reading it ends in a card or a
    CheckpointError, never another exception."""
    path = tmp_path / "m"
    if not path.with_suffix(".json").exists():
        _save(tiny_model, tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card[field] = value
    (tmp_path / "f.json").write_text(json.dumps(card))
    try:
        read_card(tmp_path / "f")
    except CheckpointError as error:
        assert str(error)
