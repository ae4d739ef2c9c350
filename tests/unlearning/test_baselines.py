"""Focused checks of the baselines: neggrad_plus, random_label, salun, scrub, ssd, l1_sparse, sgp,
adam_nscl and head_refit."""

import copy

import pytest
import torch

from core.requests import ForgetRequest
from core.tasks import TaskSpec
from core.unlearning import get_unlearner
from core.unlearning.adam_nscl import covariance_range, null_space_update
from core.unlearning.base import UnlearningContext, UnlearningData
from core.unlearning.l1_sparse import l1_schedule
from core.unlearning.random_label import random_targets
from core.unlearning.salun import forget_gradient, saliency_mask
from core.unlearning.scrub import divergences
from core.unlearning.sgp import scaled_projection, sgp_importance
from core.unlearning.ssd import dampen
from core.unlearning.subspaces import LayerSubspace

FEW = {"steps": 2, "retain_batch": 4, "forget_batch": 4, "device": "cpu", "lr": 1e-2}


@pytest.fixture()
def partial_request(street_data) -> ForgetRequest:
    """Forget depth on three instances; they keep their segmentation labels."""
    ids = street_data.train.ids
    return ForgetRequest.build(ids[:3], ["depth"], ids, list(street_data.train.tasks))


def _context(unlearner, model, request, data) -> UnlearningContext:
    """What `Unlearner.run` builds: a working copy and a frozen original."""
    return UnlearningContext(copy.deepcopy(model), copy.deepcopy(model).requires_grad_(False),
                             request, data, unlearner.config)


def _step_grads(name, overrides, model, request, data) -> dict[str, torch.Tensor]:
    """The gradient one step of `name` writes, zeros where it writes none."""
    unlearner = get_unlearner(name, {**FEW, **overrides})
    ctx = _context(unlearner, model, request, data)
    unlearner.step(ctx)
    return {n: torch.zeros_like(p) if p.grad is None else p.grad
            for n, p in ctx.model.named_parameters()}


def _assert_same_grads(left, right):
    for name in left:
        torch.testing.assert_close(left[name], right[name], rtol=1e-5, atol=1e-7, msg=name)


def test_neggrad_plus_interpolates_finetune_and_grad_ascent(street_model, street_data,
                                                            request_mode):
    args = (street_model, request_mode, street_data)
    _assert_same_grads(_step_grads("neggrad_plus", {"beta": 1.0}, *args),
                       _step_grads("finetune", {}, *args))
    _assert_same_grads(_step_grads("neggrad_plus", {"beta": 0.0}, *args),
                       _step_grads("grad_ascent", {}, *args))


def test_random_targets_are_wrong_classes_or_another_instances_targets():
    tasks = {"seg": TaskSpec("seg", "segmentation", 3), "cls": TaskSpec("cls", "classification", 4),
             "depth": TaskSpec("depth", "depth", 1), "normal": TaskSpec("normal", "normal", 3)}
    seg = torch.randint(0, 3, (2, 5, 5))
    seg[:, 0] = -1
    batch = {"image": torch.rand(2, 3, 5, 5), "seg": seg, "cls": torch.tensor([2, -1]),
             "depth": torch.rand(2, 1, 5, 5) + 1, "normal": torch.rand(2, 3, 5, 5)}
    donors = {"depth": torch.rand(3, 1, 5, 5) + 1, "normal": torch.rand(3, 3, 5, 5)}
    before = {k: v.clone() for k, v in batch.items()}
    out = random_targets(batch, tasks, donors, torch.Generator().manual_seed(0))

    valid = seg >= 0
    assert (out["seg"][~valid] == -1).all() and (out["seg"][valid] != seg[valid]).all()
    assert out["seg"].min() >= -1 and out["seg"].max() < 3
    assert out["cls"][1] == -1 and out["cls"][0] != 2 and 0 <= out["cls"][0] < 4
    for task in ("depth", "normal"):
        assert torch.equal(out[task], donors[task][:2])
    assert out["image"] is batch["image"]
    assert all(torch.equal(batch[k], before[k]) for k in batch), "the input batch was changed"


def test_saliency_mask_keeps_the_requested_share_of_largest_gradients():
    grads = {"a": torch.randn(10, 10), "b": torch.randn(50)}
    mask = saliency_mask(grads, top_k=20)
    assert sum(int(m.sum()) for m in mask.values()) == 30
    inside = torch.cat([g[mask[n]].abs() for n, g in grads.items()])
    outside = torch.cat([g[~mask[n]].abs() for n, g in grads.items()])
    assert inside.min() >= outside.max()


def test_salun_moves_only_the_salient_weights(street_model, street_data, request_mode):
    unlearner = get_unlearner("salun", {**FEW, "top_k": 10.0})
    mask = saliency_mask(forget_gradient(_context(unlearner, street_model, request_mode,
                                                  street_data)), 10.0)
    result = unlearner.run(street_model, request_mode, street_data)
    after = dict(result.model.named_parameters())
    moved = 0
    for name, before in street_model.named_parameters():
        assert torch.equal(after[name][~mask[name]], before[~mask[name]]), name
        moved += int((after[name] != before).sum())
    assert moved > 0
    assert result.extras["mask_share"] == pytest.approx(0.1, abs=1e-4)


class _TwoColourSet:
    """Eight 4x4 images: the forget ones (ids 0-2) lit only in channel 0, the others in channel 1,
    so a 1x1 convolution reads them through disjoint weights."""

    tasks = {"seg": TaskSpec("seg", "segmentation", 2), "depth": TaskSpec("depth", "depth", 1)}

    def batch(self, ids):
        image = torch.zeros(len(ids), 3, 4, 4)
        for row, i in enumerate(ids):
            image[row, 0 if i < 3 else 1] = torch.rand(4, 4, generator=torch.Generator().manual_seed(i))
        image = image + 0.5 * (image > 0)
        return {"id": torch.tensor(ids), "image": image, "seg": (image.sum(1) > 1).long(),
                "depth": image.sum(1, keepdim=True)}


class _PixelNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1, bias=False)

    def forward(self, x):
        out = self.conv(x)
        return {"seg": out[:, :2], "depth": out[:, 2:]}


def test_scrub_moves_away_from_the_teacher_on_forget_and_towards_it_on_retain():
    data = UnlearningData(train=_TwoColourSet(), val=None, calibration_ids=[])
    request = ForgetRequest.build([0, 1, 2], None, range(8), ["seg", "depth"])
    unlearner = get_unlearner("scrub", {**FEW, "steps": 3, "max_steps": 3, "gamma": 0.0,
                                        "optimizer": "sgd"})
    torch.manual_seed(0)
    teacher = _PixelNet()
    ctx = _context(unlearner, teacher, request, data)
    with torch.no_grad():
        ctx.model.conv.weight.add_(0.1 * torch.randn_like(ctx.model.conv.weight))

    def divergence(ids):
        batch = data.train.batch(ids)
        with torch.no_grad():
            return sum(divergences(data.train.tasks, ctx.model(batch["image"]),
                                   teacher(batch["image"]), batch).values())

    forget_before, retain_before = divergence(request.instances), divergence(request.retain_ids)
    unlearner.unlearn(ctx, lambda *args: None)
    assert divergence(request.instances) > forget_before
    assert divergence(request.retain_ids) < retain_before


def test_scrub_max_step_reaches_no_kept_head(street_model, street_data, partial_request):
    unlearner = get_unlearner("scrub", FEW)
    ctx = _context(unlearner, street_model, partial_request, street_data)
    with torch.no_grad():
        for parameter in ctx.model.encoder.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    (-sum(unlearner.forget_divergences(ctx).values())).backward()
    for task in street_data.train.tasks:
        grads = [p.grad for p in ctx.model.task_parameters(task)]
        if task in partial_request.kept_tasks:
            assert all(g is None or not g.any() for g in grads), task
        else:
            assert any(g is not None and g.any() for g in grads), task


def test_dampen_scales_only_weights_far_more_important_to_forget():
    param = torch.tensor([1.0, -2.0, 3.0, 4.0, -5.0])
    forget = torch.tensor([1.0, 10.0, 100.0, 0.0, 30.0])
    retain = torch.tensor([1.0, 1.0, 1.0, 0.0, 2.0])
    selected = dampen({"w": param}, {"w": forget}, {"w": retain}, alpha=10.0, dampening=20.0)
    # index 2: 100 > 10 x 1, scaled by 20 x 1 / 100; index 4: 30 > 10 x 2, scale 20 x 2 / 30 > 1
    assert selected["w"].tolist() == [False, False, True, False, True]
    torch.testing.assert_close(param, torch.tensor([1.0, -2.0, 0.6, 4.0, -5.0]))


def test_ssd_only_shrinks_weights(street_model, street_data, request_mode):
    result = get_unlearner("ssd", FEW).run(street_model, request_mode, street_data)
    after = dict(result.model.named_parameters())
    changed = 0
    for name, before in street_model.named_parameters():
        moved = after[name] != before
        changed += int(moved.sum())
        assert (after[name][moved].abs() < before[moved].abs()).all(), name
        assert (after[name][moved] * before[moved] >= 0).all(), name
    assert 0 < changed <= result.extras["dampened"]
    assert [h["step"] for h in result.history] == [1]


def test_ssd_budget_counts_what_the_run_holds_and_chunks_the_rest(street_model, street_data,
                                                                 request_mode, monkeypatch):
    import core.unlearning.gradients as gradients_module
    import core.unlearning.ssd as ssd
    from core.unlearning.gradients import MemoryBudgetError

    rooms = []
    chunks = ssd.per_sample_grad_chunks

    def spy(model, batch, loss, **options):
        rooms.append(options["memory_budget_mb"])
        return chunks(model, batch, loss, **options)

    monkeypatch.setattr(ssd, "per_sample_grad_chunks", spy)
    ample = get_unlearner("ssd", FEW).run(street_model, request_mode, street_data)
    model_mb = sum(t.nbytes for t in street_model.state_dict().values()) / 2**20
    maps_mb = sum(p.nbytes for p in street_model.parameters()) / 2**20
    # the budget, less its share kept back for what the count cannot see, less the working
    # model (parameters and buffers; ssd holds no copy of the original) and the two maps
    usable = 4096 * (1 - gradients_module.UNTRACKED_SHARE)
    assert rooms and all(abs(room - (usable - model_mb - 2 * maps_mb)) < 1e-9 for room in rooms)
    # every image counted at 20 MB: one sample's per-sample pass takes about 40 of 64 MB
    monkeypatch.setattr(gradients_module, "saved_bytes", lambda model, image: 20 * 2**20)
    sizes = []
    split = gradients_module.budget_chunk
    monkeypatch.setattr(gradients_module, "budget_chunk",
                        lambda *args, **kwargs: sizes.append(split(*args, **kwargs)) or sizes[-1])
    tight = get_unlearner("ssd", {**FEW, "memory_budget_mb": 64.0}).run(
        street_model, request_mode, street_data)
    assert sizes and set(sizes) == {1}
    after = tight.model.state_dict()
    for name, value in ample.model.state_dict().items():
        assert torch.allclose(after[name], value, rtol=1e-5, atol=1e-7), name
    monkeypatch.setattr(gradients_module, "saved_bytes", lambda model, image: 40 * 2**20)
    with pytest.raises(MemoryBudgetError, match=r"memory_budget_mb=64 is below the \d+ MB that "
                       r"the per-sample gradients needs at least"):
        get_unlearner("ssd", {**FEW, "memory_budget_mb": 64.0}).run(
            street_model, request_mode, street_data)


FORGET_TERM_ONLY = {"neggrad_plus": {"beta": 0.0}, "random_label": {"retain_weight": 0.0},
                    "salun": {"retain_weight": 0.0, "top_k": 100.0}, "ssd": {"alpha": 0.0}}


@pytest.mark.parametrize("name", FORGET_TERM_ONLY)
def test_forget_term_leaves_kept_heads_alone(name, street_model, street_data, partial_request):
    result = get_unlearner(name, {**FEW, **FORGET_TERM_ONLY[name]}).run(
        street_model, partial_request, street_data)
    for task in street_data.train.tasks:
        before = dict(street_model.heads[task].named_parameters())
        same = all(torch.equal(p, before[n]) for n, p in result.model.heads[task].named_parameters())
        assert same == (task in partial_request.kept_tasks), task


def test_l1_schedule_decays_linearly_to_zero():
    assert l1_schedule(1.0, 4) == [1.0, 0.75, 0.5, 0.25]


def test_l1_sparse_penalty_shrinks_the_weights_against_plain_finetune(street_model, street_data,
                                                                      request_mode):
    def l1(model):
        return sum(float(p.detach().abs().sum()) for p in model.parameters())

    plain = get_unlearner("finetune", FEW).run(street_model, request_mode, street_data)
    sparse = get_unlearner("l1_sparse", {**FEW, "gamma": 1.0}).run(street_model, request_mode,
                                                                  street_data)
    assert l1(sparse.model) < l1(plain.model)


def test_sgp_scales_a_basis_direction_by_its_importance():
    basis = torch.linalg.qr(torch.randn(6, 3, generator=torch.Generator().manual_seed(0))).Q
    importance = sgp_importance(torch.tensor([4.0, 2.0, 1.0]), alpha=1.0)
    # (alpha + 1) s / (alpha s + s_max) = 2 s / (s + 4)
    torch.testing.assert_close(importance, torch.tensor([1.0, 2 / 3, 0.4]))
    along = torch.stack([basis[:, 1], -2 * basis[:, 1]])  # (C_out 2, D 6), rows along u_2
    torch.testing.assert_close(scaled_projection(along, basis, importance), (1 - 2 / 3) * along)
    across = torch.randn(2, 6)
    across = across - across @ basis @ basis.T  # orthogonal to U: nothing to scale
    torch.testing.assert_close(scaled_projection(across, basis, importance), across)


def test_sgp_with_a_huge_alpha_is_gpms_projection():
    basis = torch.linalg.qr(torch.randn(6, 3, generator=torch.Generator().manual_seed(1))).Q
    importance = sgp_importance(torch.tensor([4.0, 2.0, 1.0]), alpha=1e9)
    update = torch.randn(4, 2, 3)  # a weight (C_out, C_in, k) read as (4, 6)
    gpm = LayerSubspace(basis, None).project(update)
    torch.testing.assert_close(scaled_projection(update, basis, importance), gpm)
    assert (gpm.reshape(4, 6) @ basis).abs().max() < 1e-5


def test_covariance_range_keeps_the_large_eigenvalues_and_the_update_misses_them():
    generator = torch.Generator().manual_seed(0)
    rotation = torch.linalg.qr(torch.randn(4, 4, generator=generator)).Q
    scales = torch.tensor([3.0, 1.0, 1e-4, 1e-5])  # two strong directions, two near-null ones
    rows = (torch.randn(500, 4, generator=generator) * scales) @ rotation.T
    retained = covariance_range(rows, null_ratio=10.0)
    assert retained.shape == (4, 2)
    _, vectors = torch.linalg.eigh(rows.T @ rows / len(rows))
    top = vectors[:, -2:]  # the covariance's two largest eigenvectors
    update = null_space_update(torch.randn(3, 4, generator=generator), retained)
    assert (update @ top).abs().max() < 1e-5


class _OverlapSet:
    """Eight 4x4 images: the retain ones (ids 3-7) lit only in channel 1, the forget ones (ids 0-2)
    in channels 0 and 1, so the forget gradient of a 1x1 convolution reaches both input channels
    and the retain features span channel 1 alone."""

    tasks = _TwoColourSet.tasks

    def batch(self, ids):
        image = torch.zeros(len(ids), 3, 4, 4)
        for row, i in enumerate(ids):
            lit = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(i)) + 0.5
            image[row, :2] = lit if i < 3 else lit * torch.tensor([0.0, 1.0]).view(2, 1, 1)
        return {"id": torch.tensor(ids), "image": image, "seg": (image.sum(1) > 1).long(),
                "depth": image.sum(1, keepdim=True)}


class _SharedPixelNet(_PixelNet):
    """`_PixelNet` as a multi-task model: its one convolution is the shared trunk, no heads."""

    def shared_parameters(self):
        return self.conv.parameters()

    def task_parameters(self, task):
        return iter(())


def test_adam_nscl_moves_the_weights_only_off_the_retain_features():
    data = UnlearningData(train=_OverlapSet(), val=None, calibration_ids=[])
    request = ForgetRequest.build([0, 1, 2], None, range(8), ["seg", "depth"])
    unlearner = get_unlearner("adam_nscl", {**FEW, "steps": 3, "retain_weight": 1.0})
    torch.manual_seed(0)
    ctx = _context(unlearner, _SharedPixelNet(), request, data)
    before = ctx.model.conv.weight.detach().clone()
    unlearner.unlearn(ctx, lambda *args: None)
    assert unlearner.retained["conv"].shape[1] == 1  # the retain features' one direction
    assert ctx.model.conv.weight.grad[:, 1].abs().max() > 1e-3  # the raw gradient reaches it
    change = (ctx.model.conv.weight - before).detach().reshape(3, 3)
    assert change[:, 0].abs().max() > 1e-3  # the forget-only channel moved
    assert change[:, 1].abs().max() < 1e-6  # the retain channel (top eigenvector) did not


@pytest.mark.parametrize("reinit", [False, True])
def test_head_refit_changes_only_the_target_heads(reinit, street_model, street_data, request_mode):
    result = get_unlearner("head_refit", {**FEW, "reinit": reinit}).run(
        street_model, request_mode, street_data)
    before, after = street_model.state_dict(), result.model.state_dict()
    for key, value in after.items():
        target = any(key.startswith(f"heads.{task}.") for task in request_mode.tasks)
        if not target:
            assert torch.equal(value, before[key]), key
    for task in request_mode.tasks:
        assert any(not torch.equal(after[k], before[k]) for k in after
                   if k.startswith(f"heads.{task}.")), task
