"""Scale: per-sample gradients and layer signals in chunks under a memory budget equal one pass;
the cheaper bases (gathered im2col rows, Gram spectra, heap allocation) equal the exact ones."""

import pytest
import torch
from test_projections import TASKS, _toy_batch, _toy_model
from torch import nn

from core.unlearning.gradients import per_sample_grads
from core.unlearning.projections import (
    Spectrum,
    allocate_ranks,
    energy_basis,
    leading_directions,
    threshold_rank,
)
from core.unlearning.subspaces import (
    collect_signals,
    im2col,
    layers_of,
    sample_loss,
    sample_task_losses,
    shared_names,
)


def test_chunks_within_a_memory_budget_equal_one_vmap(street_model, street_data):
    from core.unlearning.gradients import per_sample_chunk, per_sample_grad_chunks

    tasks = street_data.train.tasks
    batch = street_data.train.batch(street_data.train.ids[:5])
    whole, losses = per_sample_grads(street_model, batch, sample_task_losses(tasks), has_aux=True,
                                     memory_budget_mb=1e6)
    assert per_sample_chunk(street_model, batch, None, 1e6)[0] == 5
    assert per_sample_chunk(street_model, batch, None, 1e-3)[0] == 1  # cannot hold: one at a time
    for options in ({"chunk_size": 2}, {"memory_budget_mb": 1e-3}):
        chunked, chunk_losses = per_sample_grads(street_model, batch, sample_task_losses(tasks),
                                                 has_aux=True, **options)
        for name, value in whole.items():
            assert torch.allclose(chunked[name], value, atol=1e-6), name
        for task, value in losses.items():
            assert torch.allclose(chunk_losses[task], value, atol=1e-6), task
    squares = {}
    for rows, grads in per_sample_grad_chunks(street_model, batch, sample_loss(tasks), chunk_size=2):
        assert rows.stop - rows.start <= 2
        for name, g in grads.items():
            squares[name] = squares.get(name, 0) + g.pow(2).sum(0)
    for name, value in whole.items():
        assert torch.allclose(squares[name], value.pow(2).sum(0), rtol=1e-4, atol=1e-8), name


@pytest.mark.parametrize("stride, padding, dilation", [(2, 1, 1), (1, 2, 2), (1, "same", 1), (2, 0, 1)])
def test_im2col_of_chosen_rows_equals_those_rows_of_the_whole(stride, padding, dilation):
    conv = nn.Conv2d(3, 5, 3, stride=stride, padding=padding, dilation=dilation, bias=False)
    x = torch.randn(2, 3, 9, 11)
    whole = im2col(x, conv)
    rows = torch.randperm(whole.shape[0], generator=torch.Generator().manual_seed(0))[:17]
    assert torch.equal(im2col(x, conv, rows), whole[rows])


def test_signals_in_chunks_equal_one_pass_and_rows_are_the_same_subsample():
    model, batch = _toy_model(), _toy_batch(n=5)
    layers = layers_of(model, shared_names(model))
    tasks = dict(zip(["segmentation", "depth"], TASKS))
    one, chunked = (collect_signals(model, layers, batch, tasks, max_rows=50,
                                    generator=torch.Generator().manual_seed(3), memory_budget_mb=mb)
                    for mb in (1e6, 1e-3))  # 1e-3 MB: one image per chunk
    for name, rows in one.inputs.items():
        assert rows.shape[0] <= 50 and torch.allclose(chunked.inputs[name], rows, atol=1e-6), name
    for task in tasks:
        for name, rows in one.outputs[task].items():
            assert torch.allclose(chunked.outputs[task][name], rows, atol=1e-6), (task, name)


def _greedy_reference(energies, costs, sides, budget):
    """allocate_ranks as first written: a full scan for the best gain at every take."""
    from collections import Counter

    shares = [e.tolist() for e in energies]
    count, ranks, spent = Counter(sides), [0] * len(shares), 0.0
    captured = dict.fromkeys(count, 0.0)

    def coverage(layer, side):
        return captured[(layer, side)] / count[(layer, side)] if (layer, side) in count else 1.0

    def take(i):
        nonlocal spent
        captured[sides[i]] += shares[i][ranks[i]]
        ranks[i] += 1
        spent += costs[i]

    for i in sorted(range(len(shares)), key=lambda i: -shares[i][0] / costs[i] if shares[i] else 0):
        if shares[i] and spent + costs[i] <= budget:
            take(i)
    while True:
        best, best_gain = None, 0.0
        for i, (layer, side) in enumerate(sides):
            if ranks[i] < len(shares[i]) and spent + costs[i] <= budget:
                other = coverage(layer, "output" if side == "input" else "input")
                gain = shares[i][ranks[i]] / count[(layer, side)] * other / costs[i]
                if gain > best_gain:
                    best, best_gain = i, gain
        if best is None:
            return ranks
        take(best)


@pytest.mark.parametrize("seed", range(5))
def test_allocate_ranks_heap_matches_the_full_scan(seed):
    g = torch.Generator().manual_seed(seed)
    energies, costs, sides = [], [], []
    for layer in range(6):
        for side, groups in (("input", 1 + layer % 2), ("output", 2)):
            for _ in range(groups):
                raw = torch.rand(int(torch.randint(1, 12, (1,), generator=g)), generator=g)
                energies.append((raw / raw.sum()).sort(descending=True).values)
                costs.append(float(torch.randint(1, 40, (1,), generator=g)))
                sides.append((f"layer{layer}", side))
    for budget in (10.0, 200.0, 1500.0, 1e6):
        assert allocate_ranks(energies, costs, sides, budget) == _greedy_reference(
            energies, costs, sides, budget)


@pytest.mark.parametrize("rows, cols", [(64, 200), (200, 64)])  # wide (Gram of rows), tall
def test_spectrum_directions_span_the_exact_svd_subspaces(rows, cols):
    g = torch.Generator().manual_seed(13)
    k = min(rows, cols)
    left = torch.linalg.qr(torch.randn(rows, k, generator=g))[0]
    right = torch.linalg.qr(torch.randn(cols, k, generator=g))[0]
    matrix = (left * torch.logspace(0, -2, k)) @ right.T
    result = Spectrum(matrix)
    _, sigma, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    assert torch.allclose(result.energy.double(), (sigma.square() / sigma.square().sum())[
        :result.energy.numel()], atol=1e-5)
    for r in (1, 5, 20):
        basis = result.directions(r)
        assert torch.allclose(basis.T @ basis, torch.eye(r), atol=1e-5)
        captured = (basis.T.double() @ vh[:r].T).square().sum() / r  # 1: the same subspace
        assert captured > 1 - 1e-4, (r, float(captured))


def _captured(basis, rows):
    """Share of the energy of `rows` (n, d) that the columns of `basis` (d, r) hold."""
    return float((rows @ basis).square().sum() / rows.square().sum())


def test_output_bases_from_fewer_signal_images_hold_the_dominant_subspace():
    model, batch = _toy_model(), _toy_batch(n=8)
    layers = layers_of(model, shared_names(model))
    tasks = dict(zip(["segmentation", "depth"], TASKS))
    every = collect_signals(model, layers, batch, tasks, max_rows=10**9)
    some = collect_signals(model, layers, batch, tasks, max_rows=10**9, signal_images=3)
    for name, rows in every.inputs.items():  # input rows still come from every image
        assert torch.allclose(some.inputs[name], rows, atol=1e-6), name
    for task in tasks:
        for name, rows in every.outputs[task].items():
            assert some.outputs[task][name].shape[0] * 8 == rows.shape[0] * 3
            exact, fewer = energy_basis(rows, 0.95), energy_basis(some.outputs[task][name], 0.95)
            assert _captured(exact, rows) >= 0.95 - 1e-4
            # the bases of 3 of the 8 images hold most of what the exact bases hold of all 8
            assert _captured(fewer, rows) > 0.8, (task, name, _captured(fewer, rows))


@pytest.mark.parametrize("decay", [0.5, 0.8])  # a few leading directions / a flatter spectrum
def test_leading_directions_hold_the_threshold_and_match_the_exact_rank(decay):
    g = torch.Generator().manual_seed(5)
    n, d, k = 1024, 600, 300
    left = torch.linalg.qr(torch.randn(n, k, generator=g))[0]
    right = torch.linalg.qr(torch.randn(d, k, generator=g))[0]
    rows = (left * decay ** (torch.arange(k) / 4)) @ right.T
    exact, leading = Spectrum(rows), Spectrum(rows, 0.95)
    exact_rank = threshold_rank(exact.energy, 0.95)
    rank = leading.energy.numel()
    assert rank == threshold_rank(leading.energy, 0.95)
    assert exact_rank <= rank <= exact_rank + 2
    basis = leading.directions(rank)
    assert torch.allclose(basis.T @ basis, torch.eye(rank), atol=1e-4)
    assert _captured(basis, rows) >= 0.95 - 1e-4  # the energy they report, they hold
    assert abs(_captured(basis, rows) - float(leading.energy.sum())) < 1e-4
    overlap = (basis.T @ exact.directions(exact_rank)).square().sum() / exact_rank
    assert overlap > 0.99


def test_leading_directions_give_way_to_the_full_spectrum_when_many_are_needed():
    rows = torch.randn(1024, 300, generator=torch.Generator().manual_seed(6))  # flat spectrum
    assert leading_directions(rows, 0.95) is None
    assert torch.allclose(Spectrum(rows, 0.95).energy, Spectrum(rows).energy)


def test_tgp_passes_get_their_budget_less_the_rows_they_keep_and_the_bases_found_before(monkeypatch):
    """The rows a group's passes collect, and the spectra of the groups before it, stay resident
    through those passes: the passes get what is left of the budget (measured at ResNet-50
    288x384 in partial mode: 1-2 GB of rows and spectra the budget did not count)."""
    import core.unlearning.subspaces as subspaces

    model, batch = _toy_model(), _toy_batch(n=5)
    layers = layers_of(model, shared_names(model))
    tasks = dict(zip(["segmentation", "depth"], TASKS))
    groups = {"retain": (batch, tasks), "kept": (batch, {"depth": tasks["depth"]})}
    given, real = [], subspaces.collect_signals

    def spy(*args):
        given.append(args[6])
        signals = real(*args)
        kept = sum(r.numel() * r.element_size() for r in signals.inputs.values()) + sum(
            r.numel() * r.element_size() for rows in signals.outputs.values() for r in rows.values())
        assert kept <= subspaces.signal_bytes(layers, args[3], 40)[0]  # the bound holds
        return signals

    monkeypatch.setattr(subspaces, "collect_signals", spy)
    subspaces.layer_subspaces(model, layers, groups, 0.9, 0.9, budget=10**6, max_rows=40,
                              memory_budget_mb=100.0)
    rows, spectra = zip(*(subspaces.signal_bytes(layers, g[1], 40) for g in groups.values()))
    assert given == [pytest.approx(100.0 - rows[0] / 2**20),
                     pytest.approx(100.0 - (spectra[0] + rows[1]) / 2**20)]
