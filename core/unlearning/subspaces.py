"""Layer subspaces of a model on kept data: what its layers see and what its tasks feel.

For every projectable layer (Conv2d, Linear) one forward pass with hooks records
- the layer's input as row vectors: a Conv2d's im2col patches (N * L, C_in * k * k), the rows its
  weight (C_out, C_in * k * k) multiplies; a Linear layer's input rows (N * ..., D);
- per task, the per-sample gradient of the task's loss with respect to the layer's output (the
  backward signal), as rows (N * L, C_out): the loss is the sum of per-sample losses, and with
  BatchNorm in eval mode samples do not interact, so each sample's rows are its own gradient.
Rows are subsampled at random to bound the cost of the bases, and only the rows kept are built.
Energy-threshold bases of these rows, cut to a memory budget shared by all layers, give each
layer its `LayerSubspace`. The passes run in chunks of images that keep to a memory budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import distributed
from core.tasks import TaskSpec
from core.unlearning.gradients import (
    DEFAULT_MEMORY_BUDGET_MB,
    WORKING_FACTOR,
    budget_chunk,
    release_freed_memory,
    saved_bytes,
)
from core.unlearning.projections import (
    Spectrum,
    allocate_ranks,
    project_task_aware,
    task_aware_removed,
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


def forget_layers(model: nn.Module, tasks) -> dict[str, nn.Module]:
    """The layers a projection acts on: `layers_of` the parameters the losses of `tasks` reach,
    grouped convolutions left out (their input rows are not one per weight row)."""
    return {name: module for name, module in layers_of(model, reached_names(model, tasks)).items()
            if getattr(module, "groups", 1) == 1}


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


def im2col(x: Tensor, conv: nn.Conv2d, rows: Tensor | None = None) -> Tensor:
    """The patches a Conv2d multiplies by its weight: (N, C_in, H, W) -> (N * L, C_in * k * k).

    L is the number of output positions; row order is (sample, position), column order matches
    `conv.weight.reshape(C_out, -1)`, so conv(x) = rows @ W^T (+ bias) position by position.
    rows: (R,) indices into those N * L rows; only they are built, by gathering their patches,
    so a subsample costs R x D instead of N * L x D (unfolding a whole 32-image batch took
    0.6 s of the set-up on a ResNet-18 at 128x128 to keep 1024 of its rows).
    """
    padding = conv.padding
    if conv.padding_mode != "zeros" or isinstance(padding, str):
        mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
        x = F.pad(x, conv._reversed_padding_repeated_twice, mode=mode)
        padding = (0, 0)
    if rows is None:
        cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=padding,
                        stride=conv.stride)  # (N, D, L)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    (kh, kw), (dh, dw), (sh, sw) = conv.kernel_size, conv.dilation, conv.stride
    x = F.pad(x, (padding[1], padding[1], padding[0], padding[0]))
    out_w = (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    out_h = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1
    rows = rows.to(x.device)
    sample, position = rows // (out_h * out_w), rows % (out_h * out_w)
    top = (position // out_w) * sh
    left = (position % out_w) * sw
    ys = top[:, None] + dh * torch.arange(kh, device=x.device)  # (R, kh)
    xs = left[:, None] + dw * torch.arange(kw, device=x.device)  # (R, kw)
    patches = x.permute(0, 2, 3, 1)[sample[:, None, None], ys[:, :, None], xs[:, None, :]]
    return patches.permute(0, 3, 1, 2).reshape(rows.shape[0], -1)  # (R, C_in * kh * kw)


def _has_input_rows(module: nn.Module) -> bool:
    """Whether a layer's weight is one product with its input rows (not a grouped conv)."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _input_rows(module: nn.Module, x: Tensor, rows: Tensor | None) -> Tensor:
    if isinstance(module, nn.Conv2d):
        return im2col(x, module, rows)
    flat = x.reshape(-1, x.shape[-1])
    return flat if rows is None else flat[rows.to(flat.device)]


def _channel_rows(module: nn.Module, t: Tensor, rows: Tensor | None) -> Tensor:
    """A layer output or its gradient as rows of channels, (N, C, ...) -> (N * ..., C), or only
    the rows `rows` of that, gathered without building the rest."""
    if isinstance(module, nn.Linear):
        flat = t.reshape(-1, t.shape[-1])
        return flat if rows is None else flat[rows.to(flat.device)]
    if rows is None:
        return t.movedim(1, -1).reshape(-1, t.shape[1])
    rows = rows.to(t.device)
    spatial = t.shape[2:].numel()
    flat = t.reshape(t.shape[0], t.shape[1], spatial)
    return flat[rows // spatial, :, rows % spatial]


def _positions(module: nn.Module, output: Tensor) -> int:
    """Rows per sample of a layer: output positions of a conv, leading positions of a Linear."""
    if isinstance(module, nn.Linear):
        return output[0].numel() // output.shape[-1]
    return output[0, 0].numel()


def _picks(total: int, max_rows: int, generator: torch.Generator | None) -> Tensor | None:
    """A uniform random subset of max_rows of `total` rows, in random order; None for all."""
    if total <= max_rows:
        return None
    return torch.randperm(total, generator=generator)[:max_rows]


class _Rows:
    """Rows of one layer (and task) gathered chunk by chunk into the order of their picks."""

    def __init__(self, picks: Tensor | None, per_sample: int):
        self.picks, self.per_sample, self.parts, self.rows = picks, per_sample, [], None

    def local(self, start: int, stop: int) -> tuple[Tensor | None, Tensor | None]:
        """(where in the result, which rows of the chunk of samples [start, stop))."""
        if self.picks is None:
            return None, None
        lo, hi = start * self.per_sample, stop * self.per_sample
        mask = (self.picks >= lo) & (self.picks < hi)
        return mask, self.picks[mask] - lo

    def add(self, mask: Tensor | None, values: Tensor) -> None:
        if mask is None:
            self.parts.append(values)
            return
        if self.rows is None:
            self.rows = values.new_empty((self.picks.shape[0], values.shape[1]))
        self.rows[mask.to(values.device)] = values

    def result(self) -> Tensor:
        return torch.cat(self.parts) if self.picks is None else self.rows


def _shared_rows(model: nn.Module, layers: Mapping[str, nn.Module], batch: Mapping[str, Tensor],
                 tasks: Mapping[str, TaskSpec], count: int, signal_count: int, max_rows: int,
                 generator: torch.Generator | None) -> tuple[dict[str, _Rows], dict[str, dict[str, _Rows]]]:
    """The `_Rows` of `collect_signals` for a batch the ranks share, made before any rank's pass:
    a pass of one image tells each layer's rows per sample and row width and which (task, layer)
    pairs get a backward signal, and the row picks are drawn from `generator` in the order one
    process draws them in its first chunk (input rows in the order the layers run, then per task
    the output rows), so every rank keeps the rows one process keeps. All rows start at zero
    and are picked (every row, in order, where one process keeps all of them), so each rank
    fills its own and a sum across the ranks gives the whole."""
    order: list[str] = []
    shapes: dict[str, tuple[int, int, Tensor]] = {}  # layer -> (rows per sample, width, like)
    captured: dict[str, Tensor] = {}
    backward = bool(signal_count and tasks)

    def hook(name: str, module: nn.Module):
        def capture(_, args, output):
            if name not in order:
                order.append(name)
            if _has_input_rows(module) and name not in shapes:
                row = _input_rows(module, args[0][:1].detach(), torch.zeros(1, dtype=torch.long))
                shapes[name] = (_positions(module, output), row.shape[1], row)
            if backward:
                captured[name] = output
                return output.clone()
            return None
        return capture

    handles = [module.register_forward_hook(hook(name, module)) for name, module in layers.items()]
    try:
        with torch.set_grad_enabled(backward):
            predictions = model(batch["image"][:1])
    finally:
        for handle in handles:
            handle.remove()
    signals: dict[str, dict[str, tuple[int, int, Tensor]]] = {task: {} for task in tasks}
    names = list(captured)
    for i, (task_name, task) in enumerate(tasks.items() if backward else ()):
        loss = task.per_sample_loss(predictions[task_name], batch[task_name][:1]).sum()
        grads = torch.autograd.grad(loss, [captured[n] for n in names],
                                    retain_graph=i < len(tasks) - 1, allow_unused=True)
        for name, g in zip(names, grads):
            if g is not None:
                row = _channel_rows(layers[name], g.detach(), torch.zeros(1, dtype=torch.long))
                signals[task_name][name] = (_positions(layers[name], g), row.shape[1], row)
    del predictions
    captured.clear()

    def made(total: int, per_sample: int, width: int, like: Tensor) -> _Rows:
        picks = _picks(total, max_rows, generator)
        rows = _Rows(torch.arange(total) if picks is None else picks, per_sample)
        rows.rows = like.new_zeros((len(rows.picks), width))
        return rows

    inputs = {name: made(count * shapes[name][0], *shapes[name]) for name in order if name in shapes}
    outputs = {task: {name: made(signal_count * per_layer[name][0], *per_layer[name])
                      for name in names if name in per_layer}
               for task, per_layer in signals.items()}
    return inputs, outputs


class _InputsDone(Exception):
    """Raised by the last hook of a forward that is only read for input rows: the rest of the
    model (the task heads, which TGP does not project) need not run."""


@dataclass
class Signals:
    """What one batch shows of each layer: input rows and, per task, backward-signal rows."""

    inputs: dict[str, Tensor]  # layer -> (rows, D)
    outputs: dict[str, dict[str, Tensor]]  # task -> layer -> (rows, C_out)


def collect_signals(model: nn.Module, layers: Mapping[str, nn.Module],
                    batch: Mapping[str, Tensor], tasks: Mapping[str, TaskSpec],
                    max_rows: int = 1024, generator: torch.Generator | None = None,
                    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                    signal_images: int | None = None) -> Signals:
    """A forward pass of `batch["image"]` with hooks, then one backward per task, in chunks of
    images that keep to `memory_budget_mb`; with `signal_images`, only the first images get the
    backward passes and the others a forward without a graph for their input rows, which stops
    at the last observed layer (on small_cnn the task heads are 70% of a forward).

    Args:
        layers: {name: module} to observe (see `layers_of`).
        batch: {"image": (N, 3, H, W), task: targets (N, ...)}.
        tasks: tasks whose backward signals to record (none: a no-grad forward, inputs only).
        max_rows: rows kept per layer and per task (a uniform random subset of the N * L rows,
            drawn once for the whole batch, so chunking does not change which rows are kept).
        memory_budget_mb: the most the passes may take: images per chunk = budget / (3 x the
            bytes autograd saves per image; the hooks keep a copy of each layer's output).
        signal_images: the backward signals come from the first this many images (default:
            all); each costs a backward per task, against a third of that for an image that gives
            input rows only. Rows of the signal images' positions are drawn as for the whole.
    Returns:
        Signals with inputs for Conv2d (groups 1) and Linear layers and outputs for every layer.
    """
    images = batch["image"]
    count = len(images)
    signal_count = 0 if not tasks else count if signal_images is None else min(signal_images, count)
    saved = saved_bytes(model, images[:1])
    # under torchrun, on a batch the ranks share, each rank takes its share of the signal images
    # and of the others, into rows made beforehand (`_shared_rows`), summed across ranks at the end
    shared = distributed.rows_of(images) is not None
    spans = []
    for first, last, backward in ((0, signal_count, True), (signal_count, count, False)):
        if shared:
            share = distributed.shard_rows(last - first)
            first, last = first + share.start, first + share.stop
        per_image = saved * (WORKING_FACTOR + 1) if backward else saved
        chunk = budget_chunk(memory_budget_mb, per_image, total=max(last - first, 1))
        spans += [(start, min(start + chunk, last), backward) for start in range(first, last, chunk)]
    inputs: dict[str, _Rows] = {}
    outputs: dict[str, dict[str, _Rows]] = {task: {} for task in tasks}
    if shared:
        inputs, outputs = _shared_rows(model, layers, batch, tasks, count, signal_count, max_rows,
                                       generator)
    for start, stop, backward in spans:
        captured: dict[str, Tensor] = {}
        pending = {name for name, module in layers.items() if _has_input_rows(module)}

        def hook(name: str, module: nn.Module, start=start, stop=stop, captured=captured,
                 backward=backward, pending=pending):
            def capture(_, args, output):
                if _has_input_rows(module):
                    if name not in inputs:  # first chunk: input rows are drawn in layer order
                        per_sample = _positions(module, output)
                        inputs[name] = _Rows(_picks(count * per_sample, max_rows, generator),
                                             per_sample)
                    mask, rows = inputs[name].local(start, stop)
                    inputs[name].add(mask, _input_rows(module, args[0].detach(), rows))
                    pending.discard(name)
                    if not backward and not pending:
                        raise _InputsDone
                if backward:
                    captured[name] = output
                    # a later in-place op (ReLU(inplace=True)) must not overwrite it
                    return output.clone()
                return None
            return capture

        handles = [module.register_forward_hook(hook(name, module))
                   for name, module in layers.items()]
        try:
            with torch.set_grad_enabled(backward):
                predictions = model(images[start:stop])
        except _InputsDone:
            predictions = None
        finally:
            for handle in handles:
                handle.remove()
        names = list(captured)
        for i, (task_name, task) in enumerate(tasks.items() if backward else ()):
            loss = task.per_sample_loss(predictions[task_name], batch[task_name][start:stop]).sum()
            grads = torch.autograd.grad(loss, [captured[n] for n in names],
                                        retain_graph=i < len(tasks) - 1, allow_unused=True)
            for name, g in zip(names, grads):
                if g is None:
                    continue
                if name not in outputs[task_name]:
                    per_sample = _positions(layers[name], g)
                    outputs[task_name][name] = _Rows(
                        _picks(signal_count * per_sample, max_rows, generator), per_sample)
                mask, rows = outputs[task_name][name].local(start, stop)
                outputs[task_name][name].add(mask, _channel_rows(layers[name], g.detach(), rows))
        del predictions, captured
    if shared:
        for rows in [*inputs.values(), *(r for per_layer in outputs.values() for r in per_layer.values())]:
            distributed.all_reduce(rows.result())
    return Signals({name: rows.result() for name, rows in inputs.items()},
                   {task: {name: rows.result() for name, rows in per_layer.items()}
                    for task, per_layer in outputs.items()})


def signal_bytes(layers: Mapping[str, nn.Module], tasks: Mapping[str, Any], max_rows: int
                 ) -> tuple[int, int]:
    """(rows, spectra): at most the bytes of the rows `collect_signals` keeps for one group (up
    to `max_rows` float32 rows per layer of its input and, per task, of its output channels),
    and of the `Spectrum` of each (rows of width d > n kept with their n x n Gram eigenvectors,
    else the d x d directions), so that a budget can count them before they exist."""
    widths = [module.weight[0].numel() for module in layers.values() if _has_input_rows(module)]
    widths += [module.weight.shape[0] for module in layers.values()] * len(tasks)
    rows = sum(4 * max_rows * d for d in widths)
    spectra = sum(4 * (max_rows * d + max_rows**2 if d > max_rows else d * d) for d in widths)
    return rows, spectra


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

    def removed(self, update: Tensor) -> Tensor:
        """What `project` takes away from `update`, same shape: project(x) = x - removed(x)."""
        return task_aware_removed(update, self.outputs, self.inputs)


@dataclass
class _Candidate:
    layer: str
    side: str  # "input" or "output"
    key: str
    spectrum: Spectrum  # directions built on demand, up to the rank the budget grants
    energy: Tensor  # (k,) cut at the energy threshold


SOLVERS = ("leading", "exact")
"""How `layer_subspaces` finds a basis: the leading directions alone (`leading_directions`), or a
full eigendecomposition (`Spectrum` without a threshold)."""


def _candidate(layer: str, side: str, key: str, rows: Tensor, threshold: float,
               solver: str) -> _Candidate:
    result = Spectrum(rows, threshold if solver == "leading" else None)
    rank = threshold_rank(result.energy, threshold)
    return _Candidate(layer, side, key, result, result.energy[:rank].cpu())


def layer_subspaces(model: nn.Module, layers: Mapping[str, nn.Module],
                    groups: Mapping[str, tuple[Mapping[str, Tensor], Mapping[str, TaskSpec]]],
                    eps_in: float, eps_out: float | None, budget: float, max_rows: int = 1024,
                    generator: torch.Generator | None = None,
                    memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                    signal_images: Mapping[str, int] | None = None,
                    solver: str = "exact") -> dict[str, LayerSubspace]:
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
        memory_budget_mb: what the passes over each group, the rows they keep and the spectra
            of the groups before may take together (`collect_signals`, `signal_bytes`).
        signal_images: {group: images of its batch the backward signals come from}
            (`collect_signals`); a group not named uses all of its batch.
        solver: "exact", or "leading": each basis is the fewest leading directions found that
            hold its threshold of the energy, by subspace iteration, not a full
            eigendecomposition (same ranks and spans to within a direction or two where the
            leading directions are few; `projections.leading_directions`).
    Returns:
        {layer name: LayerSubspace}, bases unions over groups (and tasks).
    """
    task_aware = eps_out is not None
    candidates, found = [], 0  # found: the bytes of the spectra of the groups done
    for group, (batch, tasks) in groups.items():
        tasks = tasks if task_aware else {}
        collected, spectra = signal_bytes(layers, tasks, max_rows)
        signals = collect_signals(model, layers, batch, tasks, max_rows, generator,
                                  memory_budget_mb - (found + collected) / 2**20,
                                  (signal_images or {}).get(group))
        candidates += [_candidate(layer, "input", group, rows, eps_in, solver)
                       for layer, rows in signals.inputs.items()]
        candidates += [_candidate(layer, "output", f"{group}/{task}", rows, eps_out, solver)
                       for task, per_layer in signals.outputs.items()
                       for layer, rows in per_layer.items()]
        del signals  # the spectra keep what they need: the rows are not held through the next passes
        release_freed_memory()
        found += spectra
    ranks = allocate_ranks([c.energy for c in candidates],
                           [c.spectrum.dim for c in candidates],
                           [(c.layer, c.side) for c in candidates], budget)
    subspaces = {}
    for name, module in layers.items():
        bases, layer_ranks = {}, {}
        for side in ("input", "output"):
            chosen = {c.key: c.spectrum.directions(r) for c, r in zip(candidates, ranks)
                      if c.layer == name and c.side == side}
            if chosen:
                bases[side] = union_basis(list(chosen.values())).to(module.weight.device)
                layer_ranks[side] = {**{key: b.shape[1] for key, b in chosen.items()},
                                     "union": bases[side].shape[1]}
        empty = module.weight.new_zeros(module.weight.shape[0], 0)
        outputs = bases.get("output", empty) if task_aware else None
        subspaces[name] = LayerSubspace(bases.get("input"), outputs, layer_ranks)
    return subspaces
