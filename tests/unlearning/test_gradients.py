"""Per-sample gradients (torch.func) against a plain loop over samples, with and without aux."""

import math
import os
import sys

import pytest
import torch

from core.unlearning.gradients import UNTRACKED_SHARE, gradients, per_sample_grads
from core.unlearning.subspaces import sample_loss, sample_task_losses


def test_per_sample_grads_match_a_loop_and_aux_gives_the_task_losses(street_model, street_data):
    tasks = street_data.train.tasks
    batch = street_data.train.batch(street_data.train.ids[:3])
    params = dict(street_model.named_parameters())
    plain = per_sample_grads(street_model, batch, sample_loss(tasks))
    grads, losses = per_sample_grads(street_model, batch, sample_task_losses(tasks), has_aux=True)
    assert set(losses) == set(tasks) and all(v.shape == (3,) for v in losses.values())
    for i in range(3):
        one = {key: value[i:i + 1] for key, value in batch.items()}
        outputs = street_model(one["image"])
        parts = {t: spec.per_sample_loss(outputs[t], one[t]).sum() for t, spec in tasks.items()}
        loop = gradients(sum(parts.values()), params)
        for name in params:
            assert torch.allclose(plain[name][i], loop[name], atol=1e-5), name
            assert torch.equal(grads[name][i], plain[name][i]), name
        for task, value in parts.items():
            assert torch.allclose(losses[task][i], value.detach(), atol=1e-6), task


def test_held_bytes_counts_each_storage_once_with_grads_optimiser_state_and_bases():
    import copy

    from core.unlearning.gradients import held_bytes
    from core.unlearning.subspaces import LayerSubspace

    model = torch.nn.Linear(10, 5)  # 55 floats
    assert held_bytes(model) == 220
    assert held_bytes(model, copy.deepcopy(model), model) == 440  # the same model twice: once
    assert held_bytes(model, {"row": model.weight[0], "whole": model.weight}) == 220  # a view: no more
    optimizer = torch.optim.Adam(model.parameters())
    assert held_bytes(optimizer) == 0  # no state before the first step
    model(torch.randn(2, 10)).sum().backward()
    assert held_bytes(model) == 440  # the parameters and their .grad
    optimizer.step()
    steps = sum(state["step"].nbytes for state in optimizer.state.values())
    assert held_bytes(optimizer) == 440 + steps  # Adam's two moments
    basis = LayerSubspace(torch.zeros(6, 2), None, {"input": {"union": 2}})
    assert held_bytes([basis, None, "text"]) == 48


def test_room_mb_leaves_the_rest_or_names_the_least_budget_that_works():
    from core.unlearning.gradients import MemoryBudgetError, room_mb

    # a share of the budget is kept back for what the count of held tensors cannot see
    assert room_mb(100.0, 30 * 2**20, 10 * 2**20, "the pass") == 100.0 * (1 - UNTRACKED_SHARE) - 30
    full = (70 + 10.5) / (1 - UNTRACKED_SHARE)
    assert room_mb(full, 70 * 2**20, 10.5 * 2**20, "the pass") == pytest.approx(10.5)  # exactly full
    least = math.ceil(full)
    with pytest.raises(MemoryBudgetError, match=rf"memory_budget_mb=80.5 is below the {least} MB that "
                       r"the pass needs at least \(70 MB the run holds .* 10 MB for one sample, "
                       r"5% kept back for memory the count cannot see\); "
                       rf"give memory_budget_mb of at least {least}"):
        room_mb(80.5, 70 * 2**20, 10.5 * 2**20, "the pass")


def test_room_mb_first_hands_freed_memory_back(monkeypatch):
    """Each chunked computation starts from what the run holds: the C allocator's freed memory
    (a phase's activations, kept by malloc for reuse and counted in the resident set) is handed
    back before the room is given out. Measured: the calibration forwards left 480 MB resident
    that the TGP passes did not reuse (ResNet-50 288x384, benchmarks/RESULTS.md)."""
    from core.unlearning import gradients

    released = []
    monkeypatch.setattr(gradients, "release_freed_memory", lambda: released.append(True))
    gradients.room_mb(100.0, 0, 0, "the pass")
    assert released == [True]


def test_release_freed_memory_lowers_the_resident_set():
    import ctypes.util

    from core.unlearning.gradients import release_freed_memory

    if not sys.platform.startswith("linux") or ctypes.util.find_library("c") is None:
        pytest.skip("glibc's malloc_trim: Linux only")

    def resident_mb() -> float:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    kept = [torch.ones(16 * 1024) for _ in range(4000)]  # 64 KB each: malloc's heap, not mmap
    del kept[::2]  # 128 MB freed between live blocks: the heap cannot shrink from its top
    before = resident_mb()
    release_freed_memory()
    assert before - resident_mb() > 50
