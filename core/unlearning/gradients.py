"""Gradient helpers shared by the methods: per-sample gradients with torch.func, in chunks that
keep to a memory budget, flattening, and the losses every method combines.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import math
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch.func import functional_call, grad, vmap

from core import distributed

Grads = dict[str, torch.Tensor]
SampleLoss = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]
"""(outputs {task: (1, ...)}, sample {key: (1, ...)}) -> scalar loss of one sample."""

DEFAULT_MEMORY_BUDGET_MB = 4096.0
"""Default memory budget of a method's whole run (the methods with a `memory_budget_mb` knob):
4 GiB, which a laptop and any GPU have to spare. What the run holds throughout (its model
copies, optimiser state, gradients, bases: `held_bytes`) is counted first, and its chunked
computations (per-sample gradients, SSD's importances, TGP's layer signals, calibration losses,
the forget batch's forward and backward) get what remains (`room_mb`)."""

UNTRACKED_SHARE = 0.05
"""Share of a run's memory budget that no chunked computation gets: what the count of held
tensors does not see (the data batches, small tensors, the interpreter, the C allocator's
fragmented free lists). A choice, with its measurements in benchmarks/DECISIONS.md section 16."""

WORKING_FACTOR = 2.0
"""Working memory of one sample's forward + backward, as a multiple of what autograd saves for
its backward (`saved_bytes`): the saved activations, plus the gradients flowing back through
them and the temporaries of the backward kernels (measured with vmap on small_cnn and ResNet-18
trunks: 1.3x to 1.8x)."""

_SAVED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def saved_bytes(model: torch.nn.Module, image: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward of one sample's forward pass, parameters excluded.

    image: (1, 3, H, W) (or any (1, ...) input), on the model's device. One forward of that
    sample is run and its saved tensors counted (each storage once); the answer is cached per
    model, input shape, dtype and device, since it depends on nothing else.
    """
    key = (tuple(image.shape[1:]), image.dtype, str(image.device))
    cache = _SAVED.setdefault(model, {})
    if key not in cache:
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}
        storages: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in params:
                storages[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outputs = model(image[:1])
        outputs = outputs.values() if isinstance(outputs, Mapping) else [outputs]
        cache[key] = sum(storages.values()) + sum(o.numel() * o.element_size() for o in outputs)
    return cache[key]


class MemoryBudgetError(ValueError):
    """A memory budget below the least a run can work in."""


def held_bytes(*objects) -> int:
    """Bytes of the distinct tensor storages that `objects` hold, each storage once: a tensor
    (and its .grad), a module (its parameters, their .grad, its buffers), an optimiser (its
    state), a dataclass (its fields), a mapping or a sequence of these; None and anything else
    count 0. Measured from the tensors themselves, so copies, views and shared storages are
    counted as what they are."""
    storages: dict[int, int] = {}

    def visit(obj) -> None:
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.nbytes():
                storages[storage.data_ptr()] = storage.nbytes()
            if obj.is_leaf and obj.grad is not None:
                visit(obj.grad)
        elif isinstance(obj, torch.nn.Module):
            for tensor in (*obj.parameters(), *obj.buffers()):
                visit(tensor)
        elif isinstance(obj, torch.optim.Optimizer):
            visit(list(obj.state.values()))
        elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            visit(vars(obj))
        elif isinstance(obj, Mapping):
            for value in obj.values():
                visit(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value)

    for obj in objects:
        visit(obj)
    return sum(storages.values())


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # no C library, or not glibc's
        return None


def release_freed_memory() -> None:
    """Hand the memory that the C allocator keeps after tensors are freed back to the system
    (glibc's `malloc_trim`): a phase's freed activations stay resident otherwise, and the next
    phase's differently sized blocks do not always reuse them. A no-op without glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def room_mb(budget_mb: float, held: int, least: float, what: str) -> float:
    """MB of a run's `budget_mb` left to a chunked computation after the `held` bytes the run
    keeps through it (`held_bytes`) and the `UNTRACKED_SHARE` kept back; freed memory is handed
    back to the system first (`release_freed_memory`), so the computation starts from what the
    run holds. `least`: the bytes of that computation's smallest chunk (one sample); when they
    do not fit, MemoryBudgetError names the budget and the least that would work."""
    release_freed_memory()
    usable = 1 - UNTRACKED_SHARE
    need = (held + least) / 2**20 / usable
    if need > budget_mb * (1 + 1e-12):
        raise MemoryBudgetError(
            f"memory_budget_mb={budget_mb:g} is below the {math.ceil(need)} MB that {what} needs "
            f"at least ({held / 2**20:.0f} MB the run holds throughout: model copies, optimiser "
            f"state, gradients, bases; {least / 2**20:.0f} MB for one sample, "
            f"{UNTRACKED_SHARE:.0%} kept back for memory the count cannot see); give "
            f"memory_budget_mb of at least {math.ceil(need)}")
    return budget_mb * usable - held / 2**20


def budget_chunk(budget_mb: float, per_item: float, fixed: float = 0.0, total: int = 1) -> int:
    """Items per chunk so that fixed + chunk * per_item bytes stay within `budget_mb`: at least
    1 (the budget then cannot hold, which `fits` tells), at most `total`."""
    room = budget_mb * 2**20 - fixed
    return max(1, min(total, int(room // max(per_item, 1.0))))


def per_sample_chunk(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                     names: Iterable[str] | None, memory_budget_mb: float,
                     keep_result: bool = True) -> tuple[int, float]:
    """(samples per vmap chunk, bytes the computation is expected to peak at) for per-sample
    gradients of `batch` within `memory_budget_mb`. A chunk of c samples takes c x (working
    memory of one sample's forward and backward + two copies of its gradient: vmap's result and
    the copy into the output); the result, when kept, takes B x parameter bytes throughout."""
    wanted = set(names) if names is not None else None
    grad_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                     if wanted is None or n in wanted)
    count = len(batch["image"])
    per_sample = WORKING_FACTOR * saved_bytes(model, batch["image"][:1]) + 2 * grad_bytes
    fixed = count * grad_bytes if keep_result else grad_bytes  # the result, or an accumulator
    chunk = budget_chunk(memory_budget_mb, per_sample, fixed, count)
    return chunk, fixed + chunk * per_sample


def per_sample_room(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                    names: Iterable[str] | None, budget_mb: float, held: int,
                    keep_result: bool = True) -> float:
    """The `memory_budget_mb` to give the per-sample gradients of `batch` in a run with
    `budget_mb` in all, of which `held` bytes are held throughout (`held_bytes`; the result of
    this computation is not among them, `per_sample_chunk` counts it). MemoryBudgetError when
    not even chunks of one sample fit."""
    least = per_sample_chunk(model, batch, names, 0.0, keep_result)[1]
    return room_mb(budget_mb, held, least, "the per-sample gradients")


def _per_sample_fn(model: torch.nn.Module, loss_fn: SampleLoss, names: Iterable[str] | None,
                   has_aux: bool, hooks: bool = False, out: Grads | None = None):
    all_params = {n: p.detach() for n, p in model.named_parameters()}
    wanted = set(all_params if names is None else names)
    layers = _hooked_layers(model, wanted) if hooks else None
    if layers is not None:
        return _hooked_fn(model, loss_fn, layers, has_aux, out)
    params = {n: p for n, p in all_params.items() if n in wanted}
    frozen = {n: p for n, p in all_params.items() if n not in wanted}
    buffers = dict(model.named_buffers())

    def one(trainable: Grads, sample: Mapping[str, torch.Tensor]):
        sample = {key: value.unsqueeze(0) for key, value in sample.items()}
        outputs = functional_call(model, ({**trainable, **frozen}, buffers), (sample["image"],))
        return loss_fn(outputs, sample)

    batched = vmap(grad(one, has_aux=has_aux), in_dims=(None, 0))
    return lambda samples: batched(params, samples)


SAMPLEWISE_PACKAGES = ("torch.nn.modules.", "core.models.", "torchvision.models.")
"""Packages whose modules compute each sample's output from that sample alone (in eval mode, with
BatchNorm on running statistics): `_hooked_layers` trusts their forward code, nothing else's."""


def _hooked_layers(model: torch.nn.Module, wanted: set[str]
                   ) -> dict[torch.nn.Module, list[tuple[str, str]]] | None:
    """{module: [(attribute, parameter name)]} for the modules owning the `wanted` parameters,
    when `_hooked_fn` gives exactly what vmap gives: the model in eval mode, every module from
    `SAMPLEWISE_PACKAGES`, BatchNorm on running statistics (no sample's output then depends on
    another's), and each wanted parameter in a Conv2d (zero padding, groups 1), Linear or
    BatchNorm2d, whose per-sample gradients `_layer_grads` derives from the layer's input and
    output gradient. None otherwise."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    layers: dict[torch.nn.Module, list[tuple[str, str]]] = {}
    for module in model.modules():
        if module.training or not type(module).__module__.startswith(SAMPLEWISE_PACKAGES):
            return None
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and (
                module.running_mean is None or module.running_var is None):
            return None
        own = [(attr, by_id[id(p)]) for attr, p in module.named_parameters(recurse=False)
               if by_id[id(p)] in wanted]
        if not own:
            continue
        kind = type(module)
        if kind is torch.nn.Conv2d:
            if (module.groups != 1 or module.padding_mode != "zeros"
                    or isinstance(module.padding, str)):
                return None
        elif kind not in (torch.nn.Linear, torch.nn.BatchNorm2d):
            return None
        layers[module] = own
    return layers


def _layer_grads(module: torch.nn.Module, x: torch.Tensor, dy: torch.Tensor,
                 weight: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Per-sample gradients {attribute: (B, *shape)} of one call of a Conv2d, Linear or eval-mode
    BatchNorm2d from its input x (B, ...) and the gradient dy (B, ...) of the summed per-sample
    losses with respect to its output (row b: that of sample b's loss, the samples being
    independent). A Conv2d's weight gradients come from one batched product of dy with the
    input's patches (unfold) where the layer has at most as many output positions as channels
    (deep, wide layers on small images, where vmap's grouped convolution was slowest: 2x to 3x
    the product on a 512-channel 3x3 layer at 8x8), else from the convolution's own
    weight-gradient kernel sample by sample (the patches would outweigh the result).
    `weight`: a (B, *weight shape) tensor the weight's gradients of a Conv2d or Linear are
    written into (and returned as), e.g. the previous step's, which a fresh allocation would
    page in again (on CPU that cost as much as the product)."""
    count = x.shape[0]
    out: dict[str, torch.Tensor] = {}
    if type(module) is torch.nn.Conv2d and dy[0, 0].numel() > dy.shape[1]:
        # more output positions than channels: the patches (B, D, L) would outweigh the result
        # (B, C_out, D), so each sample's weight gradient comes from the convolution's own
        # weight-gradient kernel instead
        if weight is None:
            weight = torch.empty((count, *module.weight.shape), dtype=dy.dtype, device=dy.device)
        for b in range(count):
            weight[b] = torch.ops.aten.convolution_backward(
                dy[b:b + 1], x[b:b + 1], module.weight.detach(), None, module.stride, module.padding,
                module.dilation, False, [0, 0], 1, [False, True, False])[1]
        out["weight"] = weight
        out["bias"] = dy.sum((2, 3))
    elif type(module) in (torch.nn.Conv2d, torch.nn.Linear):
        if type(module) is torch.nn.Conv2d:
            cols = torch.nn.functional.unfold(x, module.kernel_size, dilation=module.dilation,
                                              padding=module.padding, stride=module.stride)
            signal = dy.reshape(count, dy.shape[1], -1)  # (B, C_out, L)
            left, right, positions = signal, cols.transpose(1, 2), 2
        else:
            signal = dy.reshape(count, -1, dy.shape[-1])  # (B, L, C_out)
            left, right, positions = signal.transpose(1, 2), x.reshape(count, -1, x.shape[-1]), 1
        if weight is None:
            weight = torch.empty((count, *module.weight.shape), dtype=left.dtype,
                                 device=left.device)
        torch.bmm(left, right, out=weight.view(count, left.shape[1], right.shape[2]))
        out["weight"] = weight
        out["bias"] = signal.sum(positions)
    else:  # BatchNorm2d on running statistics
        shape = (1, -1, 1, 1)
        normalised = ((x - module.running_mean.view(shape))
                      * torch.rsqrt(module.running_var.view(shape) + module.eps))
        out["weight"] = (dy * normalised).sum((2, 3))
        out["bias"] = dy.sum((2, 3))
    return out


def _hooked_fn(model: torch.nn.Module, loss_fn: SampleLoss,
               layers: Mapping[torch.nn.Module, list[tuple[str, str]]], has_aux: bool,
               out: Grads | None = None):
    """Per-sample gradients without vmap: one batched forward that keeps each hooked layer's
    input, and one backward of the summed per-sample losses in which each layer's per-sample
    gradients are formed from that input and the gradient at its output as soon as that
    gradient arrives (`_layer_grads`; no parameter gradient is formed), after which the layer's
    input and output gradient are let go: the pass holds about what autograd saves, not that
    and every layer's output gradient besides. Equal to vmap's up to float rounding, where
    `_hooked_layers` allows it; vmap's grouped convolutions for the weight gradients took 70% of
    a ResNet-18's per-sample pass on CPU. `out`: tensors of the result's shapes to write it into
    (those of another shape are ignored)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())
    owned = {name for own in layers.values() for _, name in own}
    wanted = [n for n in params if n in owned]

    def compute(samples: Mapping[str, torch.Tensor]):
        images = samples["image"].detach().requires_grad_(True)
        count = images.shape[0]
        into = {n: t for n, t in (out or {}).items() if n in params and t.is_contiguous()
                and t.shape == (count, *params[n].shape) and t.dtype == params[n].dtype}
        grads: Grads = {}

        def record(module, inputs, output):
            node = output.grad_fn
            if node is None:
                return
            index, kept = output.output_nr, [inputs[0].detach()]

            def layer_grads(grad_outputs):
                if not kept or grad_outputs[index] is None:
                    return
                x = kept.pop()  # let go of once used
                names = dict(layers[module])
                weight = names.get("weight")
                weight = into.get(weight) if weight is not None and weight not in grads else None
                with torch.no_grad():
                    for attr, value in _layer_grads(module, x, grad_outputs[index].detach(),
                                                    weight).items():
                        name = names.get(attr)
                        if name is not None:
                            grads[name] = grads[name] + value if name in grads else value

            node.register_prehook(layer_grads)

        handles = [module.register_forward_hook(record) for module in layers]
        try:
            with torch.enable_grad():
                outputs = functional_call(model, (params, buffers), (images,))
                results = [loss_fn({t: o[b:b + 1] for t, o in outputs.items()},
                                   {k: v[b:b + 1] for k, v in samples.items()})
                           for b in range(count)]
                losses = [r[0] if has_aux else r for r in results]
                del outputs
                torch.autograd.grad(sum(losses), images, allow_unused=True)
        finally:
            for handle in handles:
                handle.remove()
        grads = {n: grads[n].contiguous() if n in grads else
                 params[n].new_zeros((count, *params[n].shape)) for n in wanted}
        if not has_aux:
            return grads
        auxes = [r[1] for r in results]
        if isinstance(auxes[0], Mapping):
            return grads, {k: torch.stack([a[k] for a in auxes]).detach() for k in auxes[0]}
        return grads, torch.stack(auxes).detach()

    return compute


def per_sample_grad_chunks(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                           loss_fn: SampleLoss, names: Iterable[str] | None = None,
                           chunk_size: int | None = None, has_aux: bool = False,
                           memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                           keep_result: bool = False, hooks: bool = False,
                           out: Grads | None = None) -> Iterator[tuple[slice, object]]:
    """`per_sample_grads` chunk by chunk: yields (rows of the batch, that chunk's result), for a
    caller that reduces the gradients as they come (SSD sums their squares) and so never holds
    all of them. Chunks are sized by `per_sample_chunk` unless `chunk_size` is given."""
    count = len(batch["image"])
    if chunk_size is None:
        chunk_size, _ = per_sample_chunk(model, batch, names, memory_budget_mb, keep_result)
    compute = _per_sample_fn(model, loss_fn, names, has_aux, hooks,
                             out if chunk_size >= count else None)
    samples = {key: value for key, value in batch.items() if key != "id"}
    for start in range(0, count, chunk_size):
        rows = slice(start, min(start + chunk_size, count))
        yield rows, compute({key: value[rows] for key, value in samples.items()})


def per_sample_grads(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                     loss_fn: SampleLoss, names: Iterable[str] | None = None,
                     chunk_size: int | None = None, has_aux: bool = False,
                     memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB, hooks: bool = False,
                     out: Grads | None = None):
    """Gradients of `loss_fn` for each sample of `batch`, by vmap over torch.func.grad, in
    chunks of samples sized to a memory budget.

    Args:
        model: evaluated in its current mode (BatchNorm in eval mode uses running statistics).
        batch: {"image": (B, 3, H, W), task: (B, ...), ...}; every tensor has B rows.
        loss_fn: the loss of one sample (see `SampleLoss`).
        names: parameter names to differentiate (default: all); the others are held fixed.
        chunk_size: samples per vmap chunk (default: as many as `memory_budget_mb` allows).
        has_aux: `loss_fn` returns (loss, aux), aux a tensor or a dict of tensors of that sample.
        memory_budget_mb: what the computation may take, its result included (see
            `per_sample_chunk`); when the result alone exceeds it, chunks are single samples.
        hooks: where `_hooked_layers` allows it (eval mode, the package's own modules, the
            parameters in Conv2d / Linear / BatchNorm2d layers), a batched forward and backward
            with hooks instead of vmap (`_hooked_fn`): the same gradients up to float rounding,
            faster (ResNet-18, 64x64, batch 16, 1 thread on a loaded host: 2.0 s with vmap,
            1.4 s with hooks); elsewhere vmap.
        out: with hooks, in one chunk: a previous result whose tensors of the right shape the
            weights' gradients are written into (its values are lost), to spare a fresh B x P
            allocation.
    Returns:
        {name: (B, *parameter.shape)}; with has_aux, (that, aux with a leading B dimension),
        which gives e.g. the per-sample losses for free. Equal to one unchunked vmap.

    Under torchrun, on a batch shared by the ranks (`core.distributed.rows_of`), each rank
    computes its own rows and the whole result is put together on every rank
    (`core.distributed.gather_tree`): the same tensors as one process's.
    """
    count = len(batch["image"])
    rows = distributed.rows_of(batch["image"])
    if rows is not None:
        local = {key: value[rows] for key, value in batch.items()}
        part = per_sample_grads(model, local, loss_fn, names, chunk_size, has_aux, memory_budget_mb,
                                hooks)
        return distributed.gather_tree(part, rows, count)
    grads: Grads = {}
    auxes = []
    for rows, part in per_sample_grad_chunks(model, batch, loss_fn, names, chunk_size, has_aux,
                                             memory_budget_mb, keep_result=True, hooks=hooks,
                                             out=out):
        part_grads, aux = part if has_aux else (part, None)
        if rows.start == 0 and rows.stop == count:
            return part
        for name, value in part_grads.items():
            if name not in grads:
                grads[name] = value.new_empty((count, *value.shape[1:]))
            grads[name][rows] = value
        del part_grads, part
        auxes.append(aux)
    if not has_aux:
        return grads
    if isinstance(auxes[0], Mapping):
        return grads, {key: torch.cat([a[key] for a in auxes]) for key in auxes[0]}
    return grads, torch.cat(auxes)


def flatten(grads: Mapping[str, torch.Tensor], start_dim: int = 0) -> torch.Tensor:
    """Concatenate gradients: {name: (*lead, *shape)} -> (*lead, total) for start_dim lead dims."""
    return torch.cat([g.reshape(*g.shape[:start_dim], -1) for g in grads.values()], dim=-1)


def unflatten(vector: torch.Tensor, like: Mapping[str, torch.Tensor]) -> Grads:
    """Inverse of `flatten` for a single vector: (total,) -> {name: shape of like[name]}."""
    out, offset = {}, 0
    for name, ref in like.items():
        out[name] = vector[offset:offset + ref.numel()].view_as(ref)
        offset += ref.numel()
    return out


def gradients(loss: torch.Tensor, params: Mapping[str, torch.nn.Parameter],
              retain_graph: bool = False) -> Grads:
    """d loss / d params as a dict; parameters the loss does not reach get zeros."""
    values = torch.autograd.grad(loss, list(params.values()), retain_graph=retain_graph,
                                 allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g
            for (n, p), g in zip(params.items(), values)}


def set_grads(model: torch.nn.Module, grads: Mapping[str, torch.Tensor], copy: bool = True
              ) -> None:
    """Write `grads` into `.grad` of the named parameters (others untouched): copies, or with
    `copy=False` the tensors themselves (of the parameter's dtype) for a caller that made them
    for this alone."""
    for name, parameter in model.named_parameters():
        if name in grads:
            value = grads[name].detach().to(parameter.dtype)
            parameter.grad = value.clone() if copy else value
