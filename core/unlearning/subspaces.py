"""Layer subspaces of a model on kept data: what its layers see and what its tasks feel.

For every projectable layer (Conv2d, Linear) one forward pass with hooks records
- the layer's input as row vectors: a Conv2d's im2col patches (N * L, C_in * k * k), the rows its
  weight (C_out, C_in * k * k) multiplies; a Linear layer's input rows (N * ..., D);
- per task, the per-sample gradient of the task's loss with respect to the layer's output (the
  backward signal), as rows (N * L, C_out): the loss is the sum of per-sample losses, and with
  BatchNorm in eval mode samples do not interact, so each sample's rows are its own gradient.
Rows are subsampled at random to bound the SVD cost. Energy-threshold bases of these rows, cut to a
memory budget shared by all layers, give each layer its `LayerSubspace`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.tasks import TaskSpec
from core.unlearning.projections import (
    allocate_ranks,
    project_task_aware,
    spectrum,
    threshold_rank,
    union_basis,
)

WEIGHTED = (nn.Conv2d, nn.Linear)
"""The layers TGP and GPM project: a weight with an input side (im2col rows) and an output side."""


def shared_names(model: nn.Module) -> list[str]:
    """Names of the parameters every task shares (`model.shared_parameters()`), in model order."""
    shared = {id(p) for p in model.shared_parameters()}
    return [name for name, p in model.named_parameters() if id(p) in shared]


def reached_names(model: nn.Module, tasks) -> list[str]:
    """Names of the parameters the losses of `tasks` reach: the shared ones and those tasks' heads."""
    reached = {id(p) for p in model.shared_parameters()}
    for task in tasks:
        reached |= {id(p) for p in model.task_parameters(task)}
    return [name for name, p in model.named_parameters() if id(p) in reached]


def layers_of(model: nn.Module, names) -> dict[str, nn.Module]:
    """{module name: Conv2d or Linear module} whose own parameters all lie among `names`."""
    names = set(names)
    layers = {}
    for module_name, module in model.named_modules():
        own = [f"{module_name}.{p}" for p, _ in module.named_parameters(recurse=False)]
        if isinstance(module, WEIGHTED) and own and all(n in names for n in own):
            layers[module_name] = module
    return layers


def sample_loss(tasks: Mapping[str, TaskSpec]):
    """The summed task losses of one sample, as `per_sample_grads` wants it."""
    def loss(outputs, sample):
        return sum(task.per_sample_loss(outputs[name], sample[name]).sum()
                   for name, task in tasks.items())
    return loss


def sample_task_losses(tasks: Mapping[str, TaskSpec]):
    """`sample_loss` with the loss of each task as aux, for `per_sample_grads(has_aux=True)`:
    one differentiation then gives the per-sample gradients and the per-task losses."""
    def loss(outputs, sample):
        parts = {name: task.per_sample_loss(outputs[name], sample[name]).sum()
                 for name, task in tasks.items()}
        return sum(parts.values()), {name: value.detach() for name, value in parts.items()}
    return loss


def im2col(x: Tensor, conv: nn.Conv2d) -> Tensor:
    """The patches a Conv2d multiplies by its weight: (N, C_in, H, W) -> (N * L, C_in * k * k).

    L is the number of output positions; row order is (sample, position), column order matches
    `conv.weight.reshape(C_out, -1)`, so conv(x) = rows @ W^T (+ bias) position by position.
    """
    padding = conv.padding
    if conv.padding_mode != "zeros" or isinstance(padding, str):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
        padding = 0
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding,
                    stride=conv.stride)  # (N, D, L)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def _input_rows(module: nn.Module, x: Tensor) -> Tensor | None:
    if isinstance(module, nn.Conv2d):
        return im2col(x, module) if module.groups == 1 else None
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    return None


def _channel_rows(module: nn.Module, t: Tensor) -> Tensor:
    """A layer output or its gradient as rows of channels: (N, C, ...) -> (N * ..., C)."""
    if isinstance(module, nn.Linear):
        return t.reshape(-1, t.shape[-1])
    return t.movedim(1, -1).reshape(-1, t.shape[1])


def _subsample(rows: Tensor, max_rows: int, generator: torch.Generator | None) -> Tensor:
    if rows.shape[0] <= max_rows:
        return rows
    picks = torch.randperm(rows.shape[0], generator=generator)[:max_rows]
    return rows[picks.to(rows.device)]


@dataclass
class Signals:
    """What one batch shows of each layer: input rows and, per task, backward-signal rows."""

    inputs: dict[str, Tensor]  # layer -> (rows, D)
    outputs: dict[str, dict[str, Tensor]]  # task -> layer -> (rows, C_out)


def collect_signals(model: nn.Module, layers: Mapping[str, nn.Module],
                    batch: Mapping[str, Tensor], tasks: Mapping[str, TaskSpec],
                    max_rows: int = 1024, generator: torch.Generator | None = None) -> Signals:
    """One forward pass of `batch["image"]` with hooks, then one backward per task.

    Args:
        layers: {name: module} to observe (see `layers_of`).
        batch: {"image": (N, 3, H, W), task: targets (N, ...)}.
        tasks: tasks whose backward signals to record (none: a no-grad forward, inputs only).
        max_rows: rows kept per layer and per task (a uniform random subset).
    Returns:
        Signals with inputs for Conv2d (groups 1) and Linear layers and outputs for every layer.
    """
    inputs: dict[str, Tensor] = {}
    outputs: dict[str, Tensor] = {}

    def hook(name: str, module: nn.Module):
        def capture(_, args, output):
            rows = _input_rows(module, args[0].detach())
            if rows is not None:
                inputs[name] = _subsample(rows, max_rows, generator)
            if tasks:
                outputs[name] = output
                # a later in-place op (ReLU(inplace=True)) must not overwrite the captured output
                return output.clone()
            return None
        return capture

    handles = [module.register_forward_hook(hook(name, module)) for name, module in layers.items()]
    try:
        with torch.set_grad_enabled(bool(tasks)):
            predictions = model(batch["image"])
    finally:
        for handle in handles:
            handle.remove()
    signals = Signals(inputs, {})
    names = list(outputs)
    for i, (task_name, task) in enumerate(tasks.items()):
        loss = task.per_sample_loss(predictions[task_name], batch[task_name]).sum()
        grads = torch.autograd.grad(loss, [outputs[n] for n in names],
                                    retain_graph=i < len(tasks) - 1, allow_unused=True)
        signals.outputs[task_name] = {
            n: _subsample(_channel_rows(layers[n], g.detach()), max_rows, generator)
            for n, g in zip(names, grads) if g is not None}
    return signals


@dataclass
class LayerSubspace:
    """The kept subspaces of one layer.

    inputs: U (D, r_in), orthonormal; None for a grouped conv, whose weight is not one im2col
        product (every input direction then counts as kept: only the output side frees directions).
    outputs: V (C_out, r_out), orthonormal; None for every output direction (GPM's projection).
    ranks: JSON-able, {"input": {group: r, "union": r}, "output": {group/task: r, "union": r}}.
    """

    inputs: Tensor | None
    outputs: Tensor | None
    ranks: dict[str, Any] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in (self.inputs, self.outputs)
                   if b is not None)

    def project(self, update: Tensor) -> Tensor:
        """dW - V V^T dW U U^T for a weight, db - V V^T db for a vector (`project_task_aware`)."""
        return project_task_aware(update, self.outputs, self.inputs)


@dataclass
class _Candidate:
    layer: str
    side: str  # "input" or "output"
    key: str
    directions: Tensor  # (d, k) cut at the energy threshold
    energy: Tensor  # (k,)


def _candidate(layer: str, side: str, key: str, rows: Tensor, threshold: float) -> _Candidate:
    directions, energy = spectrum(rows)
    rank = threshold_rank(energy, threshold)
    return _Candidate(layer, side, key, directions[:, :rank], energy[:rank].cpu())


def layer_subspaces(model: nn.Module, layers: Mapping[str, nn.Module],
                    groups: Mapping[str, tuple[Mapping[str, Tensor], Mapping[str, TaskSpec]]],
                    eps_in: float, eps_out: float | None, budget: float, max_rows: int = 1024,
                    generator: torch.Generator | None = None) -> dict[str, LayerSubspace]:
    """Kept input (and output) subspaces of each layer, within a memory budget.

    Args:
        layers: {name: module} to project.
        groups: {group name: (batch, kept tasks)}: the kept data, e.g. {"retain": (retain
            sample, every task)} and, in partial mode, {"kept": (forget instances, kept tasks)}.
            Each group gets its own input basis and each (group, task) its own output basis,
            so a small group or a task with a small loss scale still gets its directions.
        eps_in, eps_out: energy thresholds; eps_out None records no output side (GPM), so
            `LayerSubspace.outputs` is None (every output direction).
        budget: floats all bases may take together, shared out by `allocate_ranks`.
    Returns:
        {layer name: LayerSubspace}, bases unions over groups (and tasks).
    """
    task_aware = eps_out is not None
    candidates = []
    for group, (batch, tasks) in groups.items():
        signals = collect_signals(model, layers, batch, tasks if task_aware else {}, max_rows,
                                  generator)
        candidates += [_candidate(layer, "input", group, rows, eps_in)
                       for layer, rows in signals.inputs.items()]
        candidates += [_candidate(layer, "output", f"{group}/{task}", rows, eps_out)
                       for task, per_layer in signals.outputs.items()
                       for layer, rows in per_layer.items()]
    ranks = allocate_ranks([c.energy for c in candidates],
                           [c.directions.shape[0] for c in candidates],
                           [(c.layer, c.side) for c in candidates], budget)
    subspaces = {}
    for name, module in layers.items():
        bases, layer_ranks = {}, {}
        for side in ("input", "output"):
            chosen = {c.key: c.directions[:, :r] for c, r in zip(candidates, ranks)
                      if c.layer == name and c.side == side}
            if chosen:
                bases[side] = union_basis(list(chosen.values())).to(module.weight.device)
                layer_ranks[side] = {**{key: b.shape[1] for key, b in chosen.items()},
                                     "union": bases[side].shape[1]}
        empty = module.weight.new_zeros(module.weight.shape[0], 0)
        outputs = bases.get("output", empty) if task_aware else None
        subspaces[name] = LayerSubspace(bases.get("input"), outputs, layer_ranks)
    return subspaces
