"""Search spaces: every method declares one inside its knobs' limits; ranges widen at their edges."""

import math

import pytest

from core.unlearning import ConfigError, list_unlearners
from core.unlearning.search import LR, STEPS, Choice, Range, search_space


@pytest.mark.parametrize("method", [m for m in list_unlearners() if m != "retrain"])
def test_every_method_declares_a_space_inside_its_knobs(method):
    for mode in ("full", "partial"):
        space = search_space(method, mode)  # raises on a knob the config lacks or a range outside it
        if method != "ssd":  # ssd takes no optimiser steps: no learning rate
            assert space["lr"] == LR and space["steps"] == STEPS, method
        assert all(isinstance(d, (Range, Choice)) for d in space.values())


def test_every_method_searches_5_to_240_steps():
    assert (STEPS.low, STEPS.high, STEPS.log) == (5, 240, True)  # protocol 5 (DECISIONS section 13)


def test_mode_only_knobs_and_ours_own_knobs():
    full, partial = search_space("interference_aware", "full"), search_space("interference_aware", "partial")
    assert "backoff_full" in full and "backoff_partial" not in full and "kept_weight" not in full
    assert "backoff_partial" in partial and "kept_weight" in partial
    assert {"band", "alpha", "basis_budget", "saturation"} <= set(full) and "tolerance" not in full
    assert "basis_budget" in partial and "eps_in" not in partial
    # a variant searches what its parts read: no bases without TGP, a loss-space target's dead zone
    assert "basis_budget" not in search_space("interference_aware_no_tgp", "full")
    assert "basis_budget" not in search_space("interference_aware_v1", "full")
    assert "basis_budget" in search_space("interference_aware_v1", "partial")
    assert {"tolerance", "match"} <= set(search_space("interference_aware_loss_stop", "full"))
    assert "band" not in search_space("interference_aware_loss_stop", "full")
    assert not {"band", "tolerance"} & set(search_space("interference_aware_fixed", "partial"))
    assert "tolerance" in search_space("neggrad_plus_calibrated", "full")
    assert {"beta"} <= set(search_space("neggrad_plus", "full"))
    assert {"alpha", "gamma", "temperature"} <= set(search_space("scrub", "full"))
    assert {"retain_weight", "basis_budget"} <= set(search_space("gpm", "full"))
    assert {"top_k", "retain_weight"} <= set(search_space("salun", "full"))


def test_a_bad_declaration_is_named(monkeypatch):
    from core.unlearning.grad_ascent import GradAscent

    monkeypatch.setattr(GradAscent, "search_space", {"lr": Range(1e-9, 1.0, log=True)})
    with pytest.raises(ConfigError, match="grad_ascent: the search range of lr .* leaves its allowed"):
        search_space("grad_ascent", "full")
    monkeypatch.setattr(GradAscent, "search_space", {"colour": Range(0, 1)})
    with pytest.raises(ConfigError, match="names 'colour'"):
        search_space("grad_ascent", "full")
    monkeypatch.setattr(GradAscent, "search_space", {})
    with pytest.raises(ConfigError, match="declares no search_space"):
        search_space("grad_ascent", "full")
    with pytest.raises(ConfigError, match="unknown mode"):
        search_space("finetune", "half")


def test_an_edge_value_widens_its_side_by_half_the_width():
    lr = Range(1e-4, 1e-2, log=True)
    assert lr.widened(3e-3, (1e-7, 10.0)) is None  # inside: no change
    low = lr.widened(1.1e-4, (1e-7, 10.0))  # position 0.02 of the log range
    assert low.high == 1e-2 and low.low == pytest.approx(1e-5)
    high = lr.widened(9.5e-3, (1e-7, 10.0))
    assert high.low == 1e-4 and high.high == pytest.approx(1e-1)
    # clipped to the knob's allowed range; no growth possible at the limit
    assert Range(0.5, 0.99).widened(0.99, (0.0, 1.0)) == Range(0.5, 1.0)
    assert Range(0.5, 1.0).widened(1.0, (0.0, 1.0)) is None
    assert Range(0.0, 0.3).widened(0.0, (0.0, 1.0)) is None
    steps = Range(5, 60, log=True, integer=True).widened(59, (1, 100_000))
    assert steps.low == 5 and steps.high == math.ceil(60 * math.sqrt(12)) and steps.integer
    assert Range(0.1, 1.0, log=True, modes=("partial",)).widened(0.1, (0.01, 1.0)).modes == ("partial",)
