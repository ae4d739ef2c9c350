"""interference_aware's parts, each a switch of the method: the separate repair step, the kept-task
output basis with its saturation rule, IGO against the kept pairs, the target in metric space."""

import pytest
import torch

import core.unlearning.interference_aware as ia
from core.requests import ForgetRequest
from core.unlearning import get_unlearner
from core.unlearning.subspaces import LayerSubspace, shared_names

ONE_STEP = {"steps": 1, "retain_batch": 4, "forget_batch": 4, "device": "cpu", "lr": 1e-2,
            "tgp": "always", "igo": "never", "basis_budget": 1.0}


def _partial(data):
    ids = data.train.ids
    return ForgetRequest.build(ids[:3], ["depth"], ids, list(data.train.tasks))


def _capture_subspaces(monkeypatch):
    seen = {}
    original = ia.InterferenceAware.kept_subspaces

    def capture(self, ctx, layers, budget, generator, held=0):
        seen.update(original(self, ctx, layers, budget, generator, held))
        return seen

    monkeypatch.setattr(ia.InterferenceAware, "kept_subspaces", capture)
    return seen


@pytest.mark.parametrize("repair, projected", [("projected", True), ("separate", False)])
def test_only_the_forget_step_is_projected_with_a_separate_repair(repair, projected, street_model,
                                                                 street_data, monkeypatch):
    # alpha 1: the forget step has no learning rate, so the whole change is the repair step
    subspaces = _capture_subspaces(monkeypatch)
    config = {**ONE_STEP, "alpha": 1.0, "repair": repair, "project_step": True}
    result = get_unlearner("interference_aware", config).run(street_model, _partial(street_data), street_data)
    before, after = street_model.state_dict(), result.model.state_dict()
    guarded = [subspace.removed(after[f"{layer}.weight"] - before[f"{layer}.weight"]).norm()
               for layer, subspace in subspaces.items()]
    assert guarded
    if projected:  # one projected step: nothing left in a guarded direction
        assert max(float(g) for g in guarded) < 1e-5
    else:  # the repair steps freely, into guarded directions too
        assert max(float(g) for g in guarded) > 1e-4


def test_the_separate_repair_weighs_the_two_steps_by_their_rates(street_model, street_data):
    method = get_unlearner("interference_aware", {**ONE_STEP, "alpha": 0.25, "repair": "separate"})
    forget, repair = torch.optim.Adam([torch.zeros(1)]), torch.optim.Adam([torch.zeros(1)])
    method.set_lr(forget, repair, 0.1)
    assert forget.param_groups[0]["lr"] == pytest.approx(0.075)
    assert repair.param_groups[0]["lr"] == pytest.approx(0.025)
    method.set_lr(forget, None, 0.1)
    assert forget.param_groups[0]["lr"] == pytest.approx(0.1)


def test_the_kept_output_basis_reads_only_the_kept_tasks(street_model, street_data, monkeypatch):
    calls = []
    original = ia.layer_subspaces

    def spy(model, layers, groups, eps_in, eps_out, *args, **kwargs):
        calls.append(({name: sorted(tasks) for name, (_, tasks) in groups.items()}, eps_out))
        return original(model, layers, groups, eps_in, eps_out, *args, **kwargs)

    monkeypatch.setattr(ia, "layer_subspaces", spy)
    for basis in ("every", "kept"):
        get_unlearner("interference_aware", {**ONE_STEP, "output_basis": basis}).run(
            street_model, _partial(street_data), street_data)
    every, kept = calls
    assert every[0]["retain"] == ["depth", "segmentation"] and kept[0]["retain"] == ["segmentation"]
    assert kept[0]["kept"] == ["segmentation"]  # the forget images' kept task, in both
    # full mode: no kept task, so no output side at all (GPM's input-side projection)
    subspaces = _capture_subspaces(monkeypatch)
    ids = street_data.train.ids
    full = ForgetRequest.build(ids[:3], None, ids, list(street_data.train.tasks))
    method = get_unlearner("interference_aware", {**ONE_STEP, "output_basis": "kept"})
    method.run(street_model, full, street_data)
    assert calls[-1][1] is None and subspaces and all(s.outputs is None for s in subspaces.values())


def test_a_saturated_output_basis_falls_back_to_the_input_side():
    inputs = torch.linalg.qr(torch.randn(12, 3)).Q
    wide = LayerSubspace(inputs, torch.linalg.qr(torch.randn(8, 7)).Q, {})
    narrow = LayerSubspace(inputs, torch.linalg.qr(torch.randn(8, 2)).Q, {})
    assert ia.saturated(wide, 0.8).outputs is None and ia.saturated(wide, 0.8).ranks["saturated"] == 7 / 8
    assert ia.saturated(narrow, 0.8) is narrow and ia.saturated(wide, 1.0) is wide
    update = torch.randn(8, 12)
    gpm = update - update @ inputs @ inputs.T
    assert torch.allclose(ia.saturated(wide, 0.8).project(update), gpm, atol=1e-5)


def test_igo_against_the_kept_pairs_leaves_no_component_along_them(street_model, street_data):
    import copy

    from core.unlearning.base import UnlearningContext

    method = get_unlearner("interference_aware", {**ONE_STEP, "igo": "always", "igo_kept": True})
    ctx = UnlearningContext(copy.deepcopy(street_model), street_model, _partial(street_data), street_data,
                            method.config)
    forget = ctx.forget_batch()
    spans = method.kept_sample_grads(ctx, forget)
    assert set(spans) == set(shared_names(ctx.model)) and all(v.shape[0] == 3 for v in spans.values())
    losses, gaps = method.forget_losses_and_kept_gaps(ctx, forget)
    signs = {t: -torch.ones_like(loss.detach()) for t, loss in losses.items()}
    samples = {n: torch.zeros(1, *p.shape) for n, p in ctx.model.named_parameters()}
    raw, _ = method.forget_gradients(ctx, forget, signs, len(forget["image"]), losses, gaps)
    direction = method.forget_direction(ctx, raw, samples, {}, {}, spans)
    for name, rows in spans.items():
        flat, rows = direction[name].reshape(-1), rows.reshape(rows.shape[0], -1)
        scale = flat.norm() * rows.norm(dim=1).clamp_min(1e-12)
        assert (rows @ flat / scale).abs().max() < 1e-4, name


def test_metric_signs_read_the_unseen_band():
    unseen = {"depth": torch.tensor([0.4, 0.5, 0.6, 0.5, float("nan")])}  # mean 0.5, std 0.082
    half = 0.0816 / 2  # band 1, 4 forget images

    def sign(value, band=1.0, n=4):
        return ia.metric_signs({"depth": torch.full((n,), value)}, unseen, band)["depth"].tolist()

    assert sign(0.5 + 2 * half) == [-1.0] * 4 and sign(0.5 - 2 * half) == [1.0] * 4
    assert sign(0.5 + half / 2) == [0.0] * 4
    # a wider band holds more; a forget set with no finite metric is left alone
    assert sign(0.5 + 2 * half, band=3.0) == [0.0] * 4 and sign(float("nan"), n=2) == [0.0, 0.0]


def test_the_metric_target_steers_and_stops_a_run(street_model, street_data):
    config = {**ONE_STEP, "steps": 3, "tgp": "always", "igo": "always"}
    result = get_unlearner("interference_aware", config).run(street_model, _partial(street_data),
                                                                       street_data)
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())
    assert 1 <= result.extras["steps_taken"] <= 3
