"""Projection maths on hand-built matrices, and layer signals on a tiny model."""

import pytest
import torch
from torch import nn

from core.models import build_model
from core.tasks import TaskSpec
from core.unlearning.projections import (
    allocate_ranks,
    energy_basis,
    orthogonalize,
    pcgrad,
    project_task_aware,
    span_basis,
    threshold_rank,
    union_basis,
)
from core.unlearning.subspaces import (
    collect_signals,
    im2col,
    layer_subspaces,
    layers_of,
    shared_names,
)


def _orthonormal(rows, cols, seed=0):
    q, _ = torch.linalg.qr(torch.randn(rows, rows, generator=torch.Generator().manual_seed(seed)))
    return q[:, :cols]


def test_task_aware_projection_removes_every_kept_rank_one_direction():
    v, u = _orthonormal(6, 2, seed=1), _orthonormal(12, 3, seed=2)
    update = torch.randn(6, 3, 2, 2)  # a conv weight: D = 3 * 2 * 2 = 12
    projected = project_task_aware(update, v, u).reshape(6, 12)
    for a in [*u.T, u @ torch.tensor([1.0, -2.0, 0.5])]:
        for w in [*v.T, v @ torch.tensor([0.3, 1.0])]:
            assert torch.dot(w, projected @ a).abs() < 1e-5  # <dW', w a^T>_F = w^T dW' a
    assert not torch.allclose(projected, update.reshape(6, 12))


def test_task_aware_projection_leaves_free_directions_alone():
    basis_out, basis_in = _orthonormal(6, 6, seed=3), _orthonormal(12, 12, seed=4)
    v, v_free = basis_out[:, :2], basis_out[:, 2:]
    u, u_free = basis_in[:, :3], basis_in[:, 3:]
    # outputs no kept task feels, on any input; and kept outputs, on inputs no kept data has
    update = v_free @ torch.randn(4, 12) + torch.randn(6, 9) @ u_free.T
    assert torch.allclose(project_task_aware(update, v, u), update, atol=1e-5)


def test_bias_and_one_sided_projections():
    v, u = _orthonormal(5, 2, seed=5), _orthonormal(7, 3, seed=6)
    bias = torch.randn(5)
    assert (v.T @ project_task_aware(bias, v, u)).abs().max() < 1e-6
    update = torch.randn(5, 7)
    gpm = project_task_aware(update, None, u)  # dW - dW U U^T
    assert (gpm @ u).abs().max() < 1e-5
    outputs_only = project_task_aware(update, v, None)  # dW - V V^T dW
    assert (v.T @ outputs_only).abs().max() < 1e-5
    assert torch.equal(project_task_aware(update, v, u[:, :0]), update)


@pytest.mark.parametrize("rows", [40, 3])  # tall (Gram eigh) and wide (SVD)
def test_energy_threshold_picks_the_expected_rank(rows):
    sigma = torch.tensor([10.0, 5.0, 1.0, 0.1])[: min(rows, 4)]
    left, right = _orthonormal(rows, sigma.numel(), seed=7), _orthonormal(8, sigma.numel(), seed=8)
    matrix = left @ torch.diag(sigma) @ right.T  # (rows, 8)
    shares = sigma.square() / sigma.square().sum()
    expected = {0.5: 1, 0.9: 2, 0.995: 3}
    for threshold, rank in expected.items():
        basis = energy_basis(matrix, threshold)
        assert basis.shape == (8, min(rank, sigma.numel())), (threshold, shares)
        assert torch.allclose(basis.T @ basis, torch.eye(basis.shape[1]), atol=1e-5)
        assert torch.allclose(basis @ basis.T @ right[:, :rank], right[:, :rank], atol=1e-4)
    assert threshold_rank(torch.zeros(3), 0.9) == 0


def test_allocate_ranks_balances_input_and_output_sides():
    # one layer: inputs cost 10 floats a direction, outputs 1
    energies = [torch.tensor([0.6, 0.3, 0.1]), torch.tensor([0.5, 0.3, 0.2])]
    sides = [("conv", "input"), ("conv", "output")]
    assert allocate_ranks(energies, [10, 1], sides, 11) == [1, 1]  # leading directions first
    # then gains 0.3 * 0.5 / 10 (input) against 0.3 * 0.6 / 1 (output), 0.2 * 0.6 / 1
    assert allocate_ranks(energies, [10, 1], sides, 13) == [1, 3]
    assert allocate_ranks(energies, [10, 1], sides, 23) == [2, 3]
    # a layer with no input bases (bias-like) counts its inputs as fully kept
    assert allocate_ranks([torch.tensor([0.5, 0.5])], [4], [("norm", "output")], 9) == [2]
    assert allocate_ranks([torch.tensor([0.5, 0.5])], [4], [("norm", "output")], 3) == [0]


def test_union_basis_spans_both_subspaces_once():
    a, b = _orthonormal(6, 3, seed=9), _orthonormal(6, 2, seed=10)
    union = union_basis([a, a[:, :2], b])
    assert union.shape == (6, 5)
    for basis in (a, b):
        assert torch.allclose(union @ union.T @ basis, basis, atol=1e-5)


def test_igo_result_is_orthogonal_to_each_retain_gradient():
    samples = torch.randn(5, 20, generator=torch.Generator().manual_seed(11))
    samples = torch.cat([samples, samples[:2] * 3])  # rank-deficient: QR falls back to SVD
    direction = torch.randn(20)
    result = orthogonalize(direction, samples)
    assert (samples @ result).abs().max() < 1e-4
    assert span_basis(samples).shape == (20, 5)
    assert orthogonalize(torch.randn(4), torch.randn(8, 4)).abs().max() < 1e-5  # spanned


def test_conflict_only_removes_only_conflicting_components():
    e = torch.eye(4)
    retain = torch.stack([e[0], e[1]])
    direction = -e[0] + e[1] + e[2]  # conflicts with sample 0, helps sample 1
    assert torch.allclose(orthogonalize(direction, retain, conflict_only=True), e[1] + e[2])
    assert torch.allclose(orthogonalize(direction, retain), e[2])
    helpful = e[0] + e[1]
    assert torch.equal(orthogonalize(helpful, retain, conflict_only=True), helpful)


def test_pcgrad_hand_case():
    direction = torch.tensor([1.0, 0.0])
    assert torch.allclose(pcgrad(direction, torch.tensor([[-1.0, 1.0]])), torch.tensor([0.5, 0.5]))
    assert torch.equal(pcgrad(direction, torch.tensor([[1.0, 1.0]])), direction)
    both = pcgrad(direction, torch.tensor([[-1.0, 1.0], [0.0, -1.0]]))
    assert torch.allclose(both, torch.tensor([0.5, 0.0]))


@pytest.mark.parametrize("stride, padding, dilation", [(2, 1, 1), (1, 2, 2), (1, "same", 1)])
def test_im2col_rows_times_weight_give_the_conv(stride, padding, dilation):
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dilation=dilation, bias=False)
    x = torch.randn(2, 3, 9, 9)
    rows = im2col(x, conv)
    out = conv(x)
    assert rows.shape == (2 * out.shape[2] * out.shape[3], 3 * 3 * 3)
    expected = out.movedim(1, -1).reshape(-1, 5)
    assert torch.allclose(rows @ conv.weight.reshape(5, -1).T, expected, atol=1e-5)


TASKS = [TaskSpec("segmentation", "segmentation", 3), TaskSpec("depth", "depth", 1)]


def _toy_batch(n=3, size=16):
    g = torch.Generator().manual_seed(12)
    return {"image": torch.rand(n, 3, size, size, generator=g),
            "segmentation": torch.randint(-1, 3, (n, size, size), generator=g),
            "depth": torch.rand(n, 1, size, size, generator=g) + 0.5}


def _toy_model():
    torch.manual_seed(0)
    return build_model({"name": "small_cnn", "args": {"width": 2}}, TASKS).eval()


def test_backward_signals_and_im2col_inputs_rebuild_the_weight_gradient():
    model, batch = _toy_model(), _toy_batch()
    layers = layers_of(model, shared_names(model))
    assert len(layers) == 5 and all(isinstance(m, nn.Conv2d) for m in layers.values())
    task = {"depth": TASKS[1]}
    signals = collect_signals(model, layers, batch, task, max_rows=10**9)
    TASKS[1].per_sample_loss(model(batch["image"])["depth"], batch["depth"]).sum().backward()
    for name, module in layers.items():
        rows = signals.outputs["depth"][name]  # (N * L, C_out), rows in (sample, position) order
        weight_grad = rows.T @ signals.inputs[name]  # sum over positions of g a^T
        expected = module.weight.grad.reshape(weight_grad.shape)
        assert torch.allclose(weight_grad, expected, rtol=1e-3, atol=1e-6), name


def test_activation_basis_of_a_conv_layer_has_im2col_shape_and_fits_the_budget():
    model, batch = _toy_model(), _toy_batch()
    layers = layers_of(model, shared_names(model))
    params = sum(p.numel() for p in model.parameters())
    groups = {"retain": (batch, dict(zip(["segmentation", "depth"], TASKS))),
              "kept": (batch, {"depth": TASKS[1]})}
    subspaces = layer_subspaces(model, layers, groups, 0.99, 0.99, budget=0.25 * params,
                                max_rows=64, generator=torch.Generator().manual_seed(0))
    conv = model.encoder.body[0][0]  # Conv2d(4, 8, 3): im2col dimension 4 * 9
    sub = subspaces["encoder.body.0.0"]
    assert sub.inputs.shape[0] == conv.in_channels * 9 and sub.outputs.shape[0] == 8
    assert set(sub.ranks["input"]) == {"retain", "kept", "union"}
    assert set(sub.ranks["output"]) == {"retain/segmentation", "retain/depth", "kept/depth", "union"}
    assert sum(s.nbytes for s in subspaces.values()) <= 0.25 * params * 4
    gpm = layer_subspaces(model, layers, {"retain": (batch, {})}, 0.9, None, budget=10**9)
    assert all(s.outputs is None and "output" not in s.ranks for s in gpm.values())
