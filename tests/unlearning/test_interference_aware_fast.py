"""interference_aware's faster step (issue 10 part 9) against the slower code it replaced: the
per-sample gradients by hooks against vmap, TGP's reordered products and IGO's blocked passes
against the old ones, and whole runs against runs on the old code paths (vmap, the old TGP
products, the old step projection, the old IGO projection), weight by weight."""

import pytest
import torch

import core.unlearning.gradients as gradients_module
import core.unlearning.interference_aware as ia
import core.unlearning.projections as projections
from core.models import build_model
from core.unlearning import get_unlearner
from core.unlearning.gradients import _hooked_layers, per_sample_grads
from core.unlearning.projections import GRAM_TOL, project_out_rows, project_task_aware
from core.unlearning.subspaces import LayerSubspace, sample_task_losses
from tests.unlearning.test_interference_aware import FEW, ToyData, _request


def old_project_task_aware(update, outputs, inputs):
    """The projection as it was: dW U U^T first, then V V^T of that."""
    matrix = update.reshape(update.shape[0], -1)
    kept = matrix if inputs is None or update.dim() == 1 else (matrix @ inputs) @ inputs.T
    if outputs is not None:
        kept = outputs @ (outputs.T @ kept)
    return (matrix - kept).view_as(update)


@torch.no_grad()
def old_project_step(params, before, projected):
    for name, subspace in projected.items():
        params[name].copy_(before[name] + old_project_task_aware(
            params[name] - before[name], subspace.outputs, subspace.inputs))


def use_old_paths(monkeypatch):
    def vmap_only(*args, hooks=False, out=None, **kwargs):
        return gradients_module.per_sample_grads(*args, **kwargs)

    monkeypatch.setattr(ia, "per_sample_grads", vmap_only)
    monkeypatch.setattr(LayerSubspace, "project",
                        lambda self, update: old_project_task_aware(update, self.outputs, self.inputs))
    monkeypatch.setattr(ia.InterferenceAware, "project_step", staticmethod(old_project_step))
    monkeypatch.setattr(projections, "project_out_rows", old_project_out_rows)


def _stir_batchnorm(model):
    """Running statistics and affine parameters away from their initial 0 / 1, so that the
    per-sample BatchNorm gradients are tested with a mean to subtract and a scale to divide by."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                module.weight.copy_(torch.rand(n, generator=g) + 0.5)
                module.bias.copy_(torch.rand(n, generator=g) - 0.5)
    return model


def _close(a, b, tol):
    scale = b.abs().max().clamp_min(1e-12)
    return float((a - b).abs().max() / scale) <= tol


def test_hooked_per_sample_grads_match_vmap_and_reuse_a_buffer(street_model, street_data):
    model = _stir_batchnorm(street_model)
    tasks = street_data.train.tasks
    batch = street_data.train.batch(street_data.train.ids[:4])
    assert _hooked_layers(model, {n for n, _ in model.named_parameters()}) is not None
    reference, ref_losses = per_sample_grads(model, batch, sample_task_losses(tasks), has_aux=True)
    fast, losses = per_sample_grads(model, batch, sample_task_losses(tasks), has_aux=True,
                                    hooks=True)
    assert list(fast) == list(reference)
    for name in reference:
        assert fast[name].shape == reference[name].shape, name
        assert _close(fast[name], reference[name], 1e-4), name
    for task in ref_losses:
        assert torch.allclose(losses[task], ref_losses[task], atol=1e-6), task
    # a previous result as `out`: its weight tensors are written over and returned
    buffer = {n: torch.full_like(g, float("nan")) for n, g in fast.items()}
    again, _ = per_sample_grads(model, batch, sample_task_losses(tasks), has_aux=True,
                                hooks=True, out=buffer)
    weights = [n for n in again if n.endswith("weight") and again[n].dim() > 2]
    assert weights and all(again[n] is buffer[n] for n in weights)
    for name in reference:
        assert _close(again[name], reference[name], 1e-4), name
    # a subset of the parameters, and chunks of one sample, as with vmap
    names = [n for n in reference][:5]
    part = per_sample_grads(model, batch, sample_task_losses(tasks), names=names, chunk_size=1,
                            has_aux=True, hooks=True)[0]
    assert list(part) == names and all(_close(part[n], reference[n], 1e-4) for n in names)


def test_hooks_fall_back_to_vmap_where_they_would_not_be_exact(street_model):
    names = {n for n, _ in street_model.named_parameters()}
    assert _hooked_layers(street_model.train(), names) is None  # BatchNorm on batch statistics
    street_model.eval()

    class Foreign(torch.nn.Module):  # forward code the hooks cannot vouch for
        def __init__(self):
            super().__init__()
            self.inner = street_model

    assert _hooked_layers(Foreign().eval(), names) is None


@pytest.mark.parametrize("r_in, r_out", [(3, 5), (5, 3), (0, 4), (4, 0)])
def test_reordered_projection_equals_the_old_one(r_in, r_out):
    g = torch.Generator().manual_seed(0)
    update = torch.randn(6, 2, 3, 3, generator=g)
    inputs = torch.linalg.qr(torch.randn(18, r_in, generator=g)).Q if r_in else None
    outputs = torch.linalg.qr(torch.randn(6, r_out, generator=g)).Q if r_out else None
    for u in (update, update[:, 0, 0, 0]):
        assert torch.allclose(project_task_aware(u, outputs, inputs),
                              old_project_task_aware(u, outputs, inputs), atol=1e-5)
        subspace = LayerSubspace(inputs, outputs)
        assert torch.allclose(u - subspace.removed(u), subspace.project(u), atol=1e-6)


def old_project_out_rows(vector, rows):
    """IGO's projection as it was: five passes over the rows."""
    gram = (rows @ rows.T).double()
    norms = gram.diagonal().sqrt()
    scale = torch.where(norms > 0, norms, torch.ones_like(norms))
    values, vectors = torch.linalg.eigh(gram / scale[:, None] / scale[None, :])
    kept = values > GRAM_TOL ** 2 * values[-1].clamp_min(0)
    vectors = vectors[:, kept] / scale[:, None]
    inverse = ((vectors / values[kept]) @ vectors.T).to(vector.dtype)
    for _ in range(2):
        vector = vector - rows.T @ (inverse @ (rows @ vector))
    return vector


@pytest.mark.parametrize("block", [7, 1 << 14])
def test_blocked_igo_projection_equals_the_old_one(block):
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(6, 100, generator=g)
    rows[3] = rows[1] + 1e-4 * rows[2]  # nearly dependent
    rows[5] = 0.0  # a zero sample gradient
    vector = torch.randn(100, generator=g)
    new, old = project_out_rows(vector, rows, block=block), old_project_out_rows(vector, rows)
    assert torch.allclose(new, old, atol=1e-5)
    assert float((rows @ new).abs().max()) < 1e-4


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_unlearned_weights_equal_those_of_the_old_code_paths(street_model, street_data,
                                                             request_mode, monkeypatch):
    # SGD: Adam divides each coordinate by its own running scale, so a coordinate whose gradient
    # is at rounding level (a kept direction TGP removed) takes a step of up to lr whose sign
    # the rounding decides, in either code path; SGD follows the gradient exactly
    model = street_model
    config = {**FEW, "steps": 3, "lr": 1e-3, "optimizer": "sgd", "stop": "loss"}  # every step forgets
    new = get_unlearner("interference_aware", config).run(model, request_mode, street_data)
    use_old_paths(monkeypatch)
    old = get_unlearner("interference_aware", config).run(model, request_mode, street_data)
    assert new.extras["steps_taken"] == old.extras["steps_taken"] == 3
    start, after_new, after_old = _weights(model), _weights(new.model), _weights(old.model)
    moved = 0.0
    for name in start:
        change = after_old[name] - start[name]
        moved = max(moved, float(change.abs().max()))
        # the runs agree to a small share of how far the weights moved
        assert float((after_new[name] - after_old[name]).abs().max()) <= \
            1e-3 * float(change.abs().max()) + 1e-6, name
    assert moved > 1e-4


def test_toy_model_with_a_linear_head_runs_the_same(monkeypatch):
    data_train = ToyData(range(10), seed=0)
    val = ToyData(range(100, 106), seed=1)
    from core.data import RestrictedSplit
    from core.unlearning import UnlearningData

    data = UnlearningData(train=data_train, val=RestrictedSplit(val, val.ids[:3]),
                          calibration_ids=val.ids[:3])
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn", "args": {"width": 2}},
                        list(ToyData.tasks.values())).eval()
    assert any(type(m) is torch.nn.Linear for m in model.modules())
    config = {**FEW, "steps": 3, "lr": 1e-3, "optimizer": "sgd"}
    request = _request(data, ["kind"])
    new = get_unlearner("interference_aware", config).run(model, request, data)
    use_old_paths(monkeypatch)
    old = get_unlearner("interference_aware", config).run(model, request, data)
    start, after_new, after_old = _weights(model), _weights(new.model), _weights(old.model)
    for name in start:
        change = float((after_old[name] - start[name]).abs().max())
        assert float((after_new[name] - after_old[name]).abs().max()) <= 1e-3 * change + 1e-6, name
