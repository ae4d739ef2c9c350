"""Every registered method, a few CPU steps, both modes, on a tiny 2-task model."""

import pytest
import torch

from core.requests import ForgetRequest
from core.unlearning import get_unlearner, list_unlearners

FEW_STEPS = {"steps": 2, "retain_batch": 4, "forget_batch": 4, "device": "cpu", "lr": 1e-2}


def _config(name):
    return {**FEW_STEPS, "epochs": 1} if name == "retrain" else FEW_STEPS


@pytest.mark.parametrize("name", list_unlearners())
def test_method_returns_a_new_model_and_leaves_the_input_alone(name, street_model, street_data,
                                                              request_mode, val_reads):
    before = {k: v.clone() for k, v in street_model.state_dict().items()}
    events = []
    result = get_unlearner(name, _config(name)).run(street_model, request_mode, street_data,
                                                     progress=events.append)
    for key, value in street_model.state_dict().items():
        assert torch.equal(value, before[key]), f"{name} mutated the input model ({key})"
    changed = [k for k, v in result.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, f"{name} returned an unchanged model"
    assert result.method == name and result.seconds > 0
    assert events and events[-1].step == events[-1].total
    assert result.history and result.config["steps"] == 2
    # the method read no val instance outside the calibration part (no tuning, no test id)
    assert set(val_reads) <= set(street_data.calibration_ids), f"{name} read {sorted(set(val_reads))}"
    assert val_reads or name != "interference_aware", "the spy saw no calibration read"


def test_unknown_method_and_bad_config_are_named():
    with pytest.raises(ValueError, match="'magic'.*grad_ascent"):
        get_unlearner("magic")
    with pytest.raises(ValueError, match="lr=-1.0 is out of range"):
        get_unlearner("grad_ascent", {"lr": -1.0})
    with pytest.raises(ValueError, match="no field colour"):
        get_unlearner("grad_ascent", {"colour": 1})


def test_overrides_from_text_are_typed():
    method = get_unlearner("interference_aware", {"conflict_only": "false", "steps": "3",
                                                  "lr": "1e-3"})
    assert method.config.conflict_only is False
    assert method.config.steps == 3 and method.config.lr == 1e-3
    assert get_unlearner("interference_aware", {"conflict_only": "True"}).config.conflict_only
    with pytest.raises(ValueError, match="conflict_only='maybe' is not a boolean"):
        get_unlearner("interference_aware", {"conflict_only": "maybe"})
    with pytest.raises(ValueError, match="steps='many' is not a valid int"):
        get_unlearner("grad_ascent", {"steps": "many"})


@pytest.mark.parametrize("name", ["interference_aware", "salun", "scrub"])
def test_a_run_is_reproduced_bit_for_bit_from_what_its_card_records(name, street_model, street_data):
    """On the CPU the same request, config and seed give identical weights; the card of an
    unlearned model records the request and the config (with its seed), which is all it takes."""
    from core.requests import ForgetRequest

    request = ForgetRequest.build([0, 2], ["depth"], street_data.train_ids, list(street_model.tasks))
    first = get_unlearner(name, {**FEW_STEPS, "seed": 5}).run(street_model, request, street_data)
    recorded = request.to_dict()  # as unlearned_card stores it
    again = get_unlearner(name, first.config).run(street_model, ForgetRequest.build(
        recorded["instances"], recorded["tasks"], street_data.train_ids, list(street_model.tasks)),
        street_data)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                 again.model.state_dict().values()))


def test_the_oracle_trains_with_the_recipe_seed_unless_given_another(street_model, street_data):
    from core.requests import ForgetRequest

    ids = street_data.train.ids
    request = ForgetRequest.build(ids[:3], None, ids, list(street_data.train.tasks))
    first, again, second = (get_unlearner("retrain", config).run(street_model, request, street_data).model
                            for config in ({}, {"train_seed": 0}, {"train_seed": 1}))
    weights = [dict(m.state_dict()) for m in (first, again, second)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the recipe's seed is 0
    assert any(not torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    with pytest.raises(ValueError, match="train_seed=-2 is out of range"):
        get_unlearner("retrain", {"train_seed": -2})


@pytest.mark.parametrize(("name", "built"), [("ssd", False), ("grad_ascent", False), ("scrub", True)])
def test_the_frozen_original_is_copied_only_for_a_method_that_reads_it(name, built, street_model, street_data,
                                                                        monkeypatch):
    """Issue 22: a run copies the model once to change it and, only when the method reads the
    frozen original (scrub's teacher, ours' anchor), once more: ssd and grad_ascent never read it,
    and a copy of ResNet-50 is 288 MB of the run's memory budget."""
    import copy

    import core.unlearning.base as base

    copies = []
    real = copy.deepcopy
    monkeypatch.setattr(base.copy, "deepcopy",
                        lambda obj, *a: (obj is street_model and copies.append(1)) or real(obj, *a))
    ids = street_data.train.ids
    request = ForgetRequest.build(ids[:3], None, ids, list(street_data.train.tasks))
    get_unlearner(name, {"steps": 1}).run(street_model, request, street_data)
    assert len(copies) == (2 if built else 1), copies
