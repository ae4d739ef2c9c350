"""Variants of interference_aware (ours less one part) and the calibrated controls: each changes
what it says and nothing else."""

import dataclasses

import pytest
import torch

from core.unlearning import ConfigError, get_unlearner
from core.unlearning.ablations import VARIANTS

FEW = {"steps": 3, "retain_batch": 4, "forget_batch": 4, "device": "cpu", "lr": 1e-2}

OURS_PARTS = {"tgp": "always", "igo": "always", "repair": "separate", "output_basis": "kept",
              "igo_kept": True, "stop": "metric", "target": "calibrated"}
"""Ours: both parts in every mode, a separate repair step, the kept tasks' output basis, IGO
against the kept pairs, and the target in metric space."""

LESS = {"interference_aware_no_tgp": {"tgp": "never"},
        "interference_aware_no_igo": {"igo": "never"},
        "interference_aware_fixed": {"target": "fixed"},
        "interference_aware_joint": {"repair": "projected"},
        "interference_aware_every": {"output_basis": "every", "saturation": 1.0},
        "interference_aware_retain_igo": {"igo_kept": False},
        "interference_aware_loss_stop": {"stop": "loss"},
        "interference_aware_by_mode": {"tgp": "partial", "igo": "full"},
        "interference_aware_v1": {"tgp": "partial", "igo": "full", "repair": "projected",
                                  "output_basis": "every", "saturation": 1.0, "igo_kept": False,
                                  "stop": "loss"}}
"""Each variant: the knobs whose defaults differ from ours'."""


def _same(a, b) -> bool:
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_ours_runs_every_part_in_every_mode():
    config = get_unlearner("interference_aware").config
    assert {k: getattr(config, k) for k in OURS_PARTS} == OURS_PARTS


def test_the_variants_are_the_registered_ones():
    assert set(VARIANTS) == set(LESS)


@pytest.mark.parametrize("name, changed", LESS.items())
def test_a_variant_is_ours_with_only_its_parts_changed(name, changed):
    ours = dataclasses.asdict(get_unlearner("interference_aware").config)
    variant = dataclasses.asdict(get_unlearner(name).config)
    assert {k: v for k, v in variant.items() if ours[k] != v} == changed


@pytest.mark.parametrize("name, switch", [("interference_aware_no_tgp", {"tgp": "always"}),
                                          ("interference_aware_no_igo", {"igo": "full"}),
                                          ("interference_aware_by_mode", {"tgp": "always"}),
                                          ("interference_aware_loss_stop", {"stop": "metric"}),
                                          ("interference_aware_fixed", {"target": "calibrated"})])
def test_a_variant_cannot_switch_its_parts(name, switch):
    with pytest.raises(ConfigError, match="is not accepted"):
        get_unlearner(name, switch)


def test_a_part_runs_only_in_the_modes_it_is_set_for(street_model, street_data, request_mode):
    mode = request_mode.mode
    # the target in loss space: on this small model the forget images' metrics already sit at
    # the unseen level, so a metric target would leave no forget direction to shape
    steer = {**FEW, "stop": "loss"}
    run = {name: get_unlearner(name, steer).run(street_model, request_mode, street_data)
           for name in ("interference_aware", "interference_aware_by_mode", "interference_aware_no_tgp",
                        "interference_aware_no_igo")}
    # ours projects in every mode (full mode: the input side alone, as GPM: there is no kept task)
    assert run["interference_aware"].extras["subspace_ranks"]
    assert run["interference_aware_no_tgp"].extras["subspace_ranks"] == {}
    # v1's placement (TGP in partial mode, IGO in full mode) is, in each mode, ours less the other part
    same = "interference_aware_no_igo" if mode == "partial" else "interference_aware_no_tgp"
    other = "interference_aware_no_tgp" if mode == "partial" else "interference_aware_no_igo"
    assert _same(run["interference_aware_by_mode"].model, run[same].model)
    assert not _same(run["interference_aware_by_mode"].model, run[other].model)
    assert not _same(run["interference_aware"].model, run[same].model)
    # each variant is ours with its switches set
    for name in ("interference_aware_no_tgp", "interference_aware_no_igo"):
        again = get_unlearner("interference_aware", {**steer, **LESS[name]}).run(
            street_model, request_mode, street_data)
        assert _same(run[name].model, again.model), name


def test_the_fixed_target_ascends_for_every_step(street_model, street_data, request_mode):
    result = get_unlearner("interference_aware_fixed", {**FEW, "steps": 4, "tolerance": 1.0}).run(
        street_model, request_mode, street_data)
    # a dead zone as wide as the target would stop a calibrated run at once; the fixed one runs on
    assert result.extras["steps_taken"] == 4 and not result.extras["stopped_early"]
    calibrated = get_unlearner("interference_aware", {**FEW, "steps": 4, "tolerance": 1.0}).run(
        street_model, request_mode, street_data)
    assert calibrated.extras["steps_taken"] <= 4


def test_the_calibrated_forget_term_follows_the_target():
    method = get_unlearner("neggrad_plus_calibrated", {"tolerance": 0.1})
    method.targets = {"a": torch.tensor(1.0), "b": torch.tensor(1.0), "c": torch.tensor(1.0)}
    losses = {"a": torch.tensor(0.5, requires_grad=True), "b": torch.tensor(1.05, requires_grad=True),
              "c": torch.tensor(2.0, requires_grad=True)}
    objective = method.forget_objective(None, losses)
    # below the dead zone: ascend (-1); inside: off (0); above: descend (+1)
    assert method.signs == {"a": -1.0, "b": 0.0, "c": 1.0}
    objective.backward()
    assert [float(losses[t].grad) for t in "abc"] == [-1.0, 0.0, 1.0]
    # the plain baselines' forget term is plain ascent
    plain = get_unlearner("neggrad_plus").forget_objective(None, losses)
    assert float(plain.detach()) == pytest.approx(-3.55)


@pytest.mark.parametrize("name", ["neggrad_plus_calibrated", "gpm_calibrated"])
def test_a_calibrated_control_stops_inside_the_dead_zone(name, street_model, street_data, request_mode,
                                                         monkeypatch):
    from core.unlearning import ablations

    # tau_t = 1e6 with a dead zone of 100%: every forget loss in [0, 2e6] is inside
    monkeypatch.setattr(ablations, "calibration_losses",
                        lambda ctx, *args: {t: torch.full((3,), 1e6) for t in ctx.target_tasks})
    events = []
    result = get_unlearner(name, {**FEW, "steps": 5, "tolerance": 1.0}).run(
        street_model, request_mode, street_data, progress=events.append)
    assert result.extras["targets"] == {t: 1e6 for t in request_mode.tasks}
    assert result.extras["stopped_early"] and result.extras["steps_taken"] == 1
    assert events[-1].step == events[-1].total == 2


def test_the_variants_are_mtunlearns_own_not_a_plugins():
    from core.unlearning.base import method_plugins

    assert method_plugins(list(VARIANTS)) == []
