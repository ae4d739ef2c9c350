"""interference_aware (ours) and the projection baselines on tiny models: heads, targets, extras."""

import json

import pytest
import torch

from core.data import RestrictedSplit
from core.models import build_model
from core.requests import ForgetRequest
from core.tasks import TaskSpec
from core.unlearning import UnlearningData, get_unlearner
from core.unlearning.subspaces import layers_of, shared_names

FEW = {"steps": 2, "retain_batch": 4, "forget_batch": 4, "device": "cpu", "lr": 1e-2}
FORGET_ONLY = {"pcgrad": {"retain_weight": 0.0}, "orthograd": {}, "gpm": {},
               "interference_aware": {"alpha": 0.0, "tolerance": 0.0, "stop": "loss"}}


class ToyData:
    """An in-memory multi-task set: 16x16 random images with random per-image labels, as
    segmentation maps (one class per image, a few ignored pixels) and as classes. Nothing
    generalises, so a model that fits some instances memorises them."""

    tasks = {"segmentation": TaskSpec("segmentation", "segmentation", 3),
             "kind": TaskSpec("kind", "classification", 3)}

    def __init__(self, ids, seed):
        g = torch.Generator().manual_seed(seed)
        self.ids = list(ids)
        self.images = torch.rand(len(ids), 3, 16, 16, generator=g)
        self.labels = torch.randint(0, 3, (len(ids), 1, 1), generator=g).expand(-1, 16, 16).clone()
        self.labels[torch.rand(self.labels.shape, generator=g) < 0.1] = -1
        self.kinds = torch.randint(0, 3, (len(ids),), generator=g)

    def batch(self, ids):
        rows = [self.ids.index(i) for i in ids]
        return {"id": torch.tensor(ids), "image": self.images[rows],
                "segmentation": self.labels[rows], "kind": self.kinds[rows]}


@pytest.fixture()
def toy():
    # unseen data for the calibrated target only: the view over its first 3 ids is all a method
    # sees (a toy with no tuning or test part to hold out)
    val = ToyData(range(100, 106), seed=1)
    data = UnlearningData(train=ToyData(range(10), seed=0), val=RestrictedSplit(val, val.ids[:3]),
                          calibration_ids=val.ids[:3])
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn", "args": {"width": 2}}, list(ToyData.tasks.values())).eval()
    return model, data


def _request(data, tasks):
    return ForgetRequest.build([0, 1, 2], tasks, data.train.ids, list(data.train.tasks))


@pytest.mark.parametrize("name", sorted(FORGET_ONLY))
@pytest.mark.parametrize("tasks", [None, ["kind"], ["segmentation"]])
def test_dense_and_classification_tasks_in_both_modes(name, tasks, toy):
    model, data = toy
    result = get_unlearner(name, FEW).run(model, _request(data, tasks), data)
    new = result.model.state_dict()
    assert all(torch.isfinite(v).all() for v in new.values())
    assert any(not torch.equal(v, new[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", sorted(FORGET_ONLY))
def test_kept_heads_never_get_the_forget_term(name, street_model, street_data):
    ids = street_data.train.ids
    request = ForgetRequest.build(ids[:3], ["depth"], ids, list(street_data.train.tasks))
    result = get_unlearner(name, {**FEW, **FORGET_ONLY[name]}).run(street_model, request,
                                                                     street_data)
    before, after = street_model.heads, result.model.heads
    for key, value in before["segmentation"].state_dict().items():
        assert torch.equal(value, after["segmentation"].state_dict()[key]), key
    assert any(not torch.equal(v, after["depth"].state_dict()[k])
               for k, v in before["depth"].state_dict().items())


@pytest.mark.parametrize("options", [{"refresh": 1}, {"conflict_only": True, "optimizer": "sgd"},
                                     {"project_step": False}])
def test_options_run_in_both_modes(options, toy):
    model, data = toy
    for tasks in (None, ["kind"]):
        result = get_unlearner("interference_aware", {**FEW, **options}).run(
            model, _request(data, tasks), data)
        assert result.extras["steps_taken"] >= 1
        assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())


WITH_RETAIN = {"interference_aware": {"alpha": 0.5}, "pcgrad": {"retain_weight": 1.0},
               "orthograd": {"retain_weight": 1.0}, "gpm": {"retain_weight": 1.0}}


@pytest.mark.parametrize("name", sorted(WITH_RETAIN))
def test_kept_heads_move_through_the_retain_term(name, street_model, street_data):
    ids = street_data.train.ids
    request = ForgetRequest.build(ids[:3], ["depth"], ids, list(street_data.train.tasks))
    result = get_unlearner(name, {**FEW, **WITH_RETAIN[name]}).run(
        street_model, request, street_data)
    head = result.model.heads["segmentation"].state_dict()
    assert any(not torch.equal(v, head[k])
               for k, v in street_model.heads["segmentation"].state_dict().items())


def test_extras_report_targets_ranks_and_bytes(street_model, street_data, request_mode):
    # every task's output basis, so the bases show in both modes
    result = get_unlearner("interference_aware", {**FEW, "output_basis": "every"}).run(
        street_model, request_mode, street_data)
    extras = result.extras
    json.dumps(extras)
    assert set(extras["targets"]) == set(request_mode.tasks)
    assert 1 <= extras["steps_taken"] <= 2
    layers = layers_of(street_model, shared_names(street_model))
    assert set(extras["subspace_ranks"]) == set(layers)
    groups = ["retain"] + (["kept"] if request_mode.mode == "partial" else [])
    for ranks in extras["subspace_ranks"].values():
        keys = {f"retain/{t}" for t in street_data.train.tasks} | {
            f"kept/{t}" for t in request_mode.kept_tasks}
        assert set(ranks["output"]) == keys | {"union"}
        assert ranks["output"]["union"] <= sum(ranks["output"][k] for k in keys)
        assert set(ranks["input"]) == {*groups, "union"}
    assert 0 < extras["subspace_bytes"] <= 0.25 * extras["model_bytes"]


def test_early_stop_completes_the_progress(street_model, street_data, request_mode):
    events = []
    result = get_unlearner("interference_aware", {**FEW, "steps": 10, "tolerance": 1.0, "stop": "loss"}).run(
        street_model, request_mode, street_data, progress=events.append)
    assert result.extras["stopped_early"] and result.extras["steps_taken"] == 1
    assert events[-1].step == events[-1].total == 2


def _memorised(model, data, request, steps=50):
    """`model` trained on the forget instances alone: their loss falls, unseen loss does not."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-2)
    batch = data.train.batch(list(request.instances))
    for _ in range(steps):
        out = model(batch["image"])
        loss = sum(task.loss(out[name], batch[name]) for name, task in data.train.tasks.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _forget_losses(model, data, request):
    batch = data.train.batch(list(request.instances))
    with torch.no_grad():
        out = model(batch["image"])
    return {t: float(data.train.tasks[t].loss(out[t], batch[t])) for t in request.tasks}


@pytest.mark.slow
@pytest.mark.parametrize("tasks", [["segmentation"], None])
def test_calibrated_target_stops_forgetting_near_tau(toy, tasks):
    model, data = toy
    request = _request(data, tasks)
    model = _memorised(model, data, request)
    config = {**FEW, "steps": 30, "lr": 0.1}  # a step size that makes plain ascent explode
    ours = get_unlearner("interference_aware", {**config, "tolerance": 0.1, "stop": "loss"}).run(
        model, request, data)
    ascent = get_unlearner("grad_ascent", config).run(model, request, data)
    start = _forget_losses(model, data, request)
    tau = ours.extras["targets"]
    ended, exploded = (_forget_losses(r.model, data, request) for r in (ours, ascent))
    for task in request.tasks:
        assert start[task] < 0.9 * tau[task], "the model must memorise for this test to mean much"
        assert exploded[task] > 2 * tau[task]
        assert start[task] < ended[task] < 1.25 * tau[task], (task, start, ended, tau)
    if tasks:  # one dense task: it settles inside its dead zone and the run stops there
        assert ours.extras["stopped_early"]
        assert abs(ended["segmentation"] - tau["segmentation"]) <= 0.1 * tau["segmentation"]


def test_project_step_keeps_the_optimiser_step_out_of_the_kept_subspace():
    from core.unlearning.interference_aware import InterferenceAware
    from core.unlearning.subspaces import LayerSubspace

    torch.manual_seed(0)
    before = torch.randn(6, 5)
    weight = torch.nn.Parameter(before + torch.randn(6, 5))  # an unprojected (Adam) step
    u, v = torch.linalg.qr(torch.randn(5, 2))[0], torch.linalg.qr(torch.randn(6, 3))[0]
    InterferenceAware.project_step({"w": weight}, {"w": before}, {"w": LayerSubspace(u, v)})
    step = weight.detach() - before
    assert torch.allclose(v.T @ step @ u, torch.zeros(3, 2), atol=1e-5)  # nothing in V x U
    assert step.norm() > 0  # the rest of the step is kept


def test_quantile_targets_follow_each_instances_rank():
    from core.unlearning.interference_aware import instance_targets

    calibration = torch.tensor([10.0, 20.0, 30.0, 40.0])
    losses = torch.tensor([3.0, 1.0, 2.0])  # ranks 2, 0, 1 -> quantiles 5/6, 1/6, 1/2
    quantiles = instance_targets(losses, calibration, "quantiles")
    assert torch.allclose(quantiles, torch.tensor([35.0, 15.0, 25.0]))
    assert torch.allclose(instance_targets(losses, calibration, "mean"), torch.full((3,), 25.0))


def test_forget_signs_per_instance_or_per_task():
    from core.unlearning.interference_aware import forget_signs, overall_sign

    losses = {"depth": torch.tensor([1.0, 2.0, 3.05, 6.0])}
    targets = {"depth": torch.tensor([2.0, 1.0, 3.0, 3.0])}
    signs = forget_signs(losses, targets, 0.05, "quantiles")["depth"]
    assert signs.tolist() == [-1, 1, 0, 1]  # 3.05 is inside 3 +- 5%
    assert overall_sign(signs, losses["depth"], targets["depth"]) == 1  # mean gap of -1, 1, 3
    assert overall_sign(torch.zeros(4), losses["depth"], targets["depth"]) == 0
    mean = forget_signs(losses, targets, 0.0, "mean")["depth"]  # mean loss 3.0 vs mean target 2.25
    assert mean.tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("match, track", [("quantiles", False), ("mean", True), ("quantiles", True)])
def test_target_variants_raise_the_forget_losses(toy, match, track):
    model, data = toy
    request = _request(data, None)
    model = _memorised(model, data, request)
    result = get_unlearner("interference_aware", {**FEW, "steps": 10, "lr": 3e-2, "match": match,
                                                  "track": track}).run(model, request, data)
    start, ended = (_forget_losses(m, data, request) for m in (model, result.model))
    assert all(ended[t] > start[t] for t in request.tasks), (start, ended)
    assert set(result.extras["final_targets"]) == set(request.tasks)
    if not track:
        assert result.extras["final_targets"] == result.extras["targets"]


def test_forget_gradients_by_micro_batches_equal_those_of_one_batch(street_model, street_data,
                                                                   request_mode):
    import copy

    from core.unlearning.base import UnlearningContext

    method = get_unlearner("interference_aware", {**FEW, "forget_batch": 3})
    ctx = UnlearningContext(copy.deepcopy(street_model), street_model, request_mode, street_data,
                            method.config)
    forget = ctx.forget_batch()
    losses, gaps = method.forget_losses_and_kept_gaps(ctx, forget)
    signs = {t: torch.tensor([-1.0, 1.0, 0.0]) for t in losses}  # one of each, per instance
    whole, whole_kept = method.forget_gradients(ctx, forget, signs, 3, losses, gaps)
    assert bool(request_mode.kept_tasks) == bool(whole_kept)
    # within float rounding of the terms summed: the instances' terms of opposite signs cancel
    # (to 1e-6 in a head's bias, from terms near 1), so the tolerance is set by the same sum
    # with every sign positive
    terms, _ = method.forget_gradients(ctx, forget, {t: s.abs() for t, s in signs.items()}, 3,
                                       *method.forget_losses_and_kept_gaps(ctx, forget))
    for micro in (1, 2):
        direction, kept = method.forget_gradients(ctx, forget, signs, micro)
        assert kept.keys() == whole_kept.keys()
        for name, value in whole.items():
            tolerance = 1e-5 * float(terms[name].abs().max()) + 1e-9
            assert float((direction[name] - value).abs().max()) <= tolerance, (micro, name)
        for name, value in whole_kept.items():
            tolerance = 1e-5 * float(value.abs().max()) + 1e-9
            assert float((kept[name] - value).abs().max()) <= tolerance, (micro, name)

def _big_images(monkeypatch, mb: float):
    """Every image counted at `mb` MB of saved activations: the tiny model planned as a big one."""
    import core.unlearning.gradients as gradients_module
    import core.unlearning.interference_aware as ia
    import core.unlearning.subspaces as subspaces

    for module in (gradients_module, ia, subspaces):
        monkeypatch.setattr(module, "saved_bytes", lambda model, image: int(mb * 2**20))


def test_a_tight_budget_micro_batches_and_chunks_to_the_same_weights(street_model, street_data,
                                                                    request_mode, monkeypatch):
    import core.unlearning.interference_aware as ia

    config = {**FEW, "steps": 3, "lr": 1e-3, "optimizer": "sgd", "forget_batch": 3,
              "igo_kept": True, "stop": "loss"}  # a target in loss space: every step forgets here
    micro_batches = []
    forget_gradients = ia.InterferenceAware.forget_gradients

    def spy(self, ctx, forget, signs, micro, *args):
        micro_batches.append(micro)
        return forget_gradients(self, ctx, forget, signs, micro, *args)

    monkeypatch.setattr(ia.InterferenceAware, "forget_gradients", spy)
    ample = get_unlearner("interference_aware", config).run(street_model, request_mode, street_data)
    assert micro_batches == [3] * 3  # the whole forget batch at once, as before the budget
    micro_batches.clear()
    _big_images(monkeypatch, 18.0)  # one forget image's forward and backward: 36 MB of 64
    tight = get_unlearner("interference_aware", {**config, "memory_budget_mb": 64.0}).run(
        street_model, request_mode, street_data)
    assert micro_batches == [1] * 3
    assert tight.extras["steps_taken"] == ample.extras["steps_taken"] == 3
    start, after = street_model.state_dict(), tight.model.state_dict()
    for name, value in ample.model.state_dict().items():
        moved = float((value - start[name]).abs().max())
        assert float((after[name] - value).abs().max()) <= 1e-3 * moved + 1e-6, name


def test_a_budget_below_the_least_that_works_is_refused_naming_both(street_model, street_data,
                                                                   request_mode, monkeypatch):
    from core.unlearning.gradients import MemoryBudgetError

    _big_images(monkeypatch, 100.0)
    with pytest.raises(MemoryBudgetError, match=r"memory_budget_mb=64 is below the 10\d MB that "
                       r"the no-grad forwards needs at least .* memory_budget_mb of at least 10\d"):
        get_unlearner("interference_aware", {**FEW, "memory_budget_mb": 64.0}).run(
            street_model, request_mode, street_data)
