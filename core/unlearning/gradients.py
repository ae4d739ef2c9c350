"""Gradient helpers shared by the methods: per-sample gradients with torch.func, in chunks that
keep to a memory budget, flattening, and the losses every method combines.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch
from torch.func import functional_call, grad, vmap

Grads = dict[str, torch.Tensor]
SampleLoss = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]
"""(outputs {task: (1, ...)}, sample {key: (1, ...)}) -> scalar loss of one sample."""

DEFAULT_MEMORY_BUDGET_MB = 4096.0
"""Default memory budget of the chunked computations (per-sample gradients, SSD's importances,
TGP's layer signals, calibration losses): 4 GiB, which a laptop and any GPU have to spare."""

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


def _per_sample_fn(model: torch.nn.Module, loss_fn: SampleLoss, names: Iterable[str] | None,
                   has_aux: bool):
    all_params = {n: p.detach() for n, p in model.named_parameters()}
    wanted = set(all_params if names is None else names)
    params = {n: p for n, p in all_params.items() if n in wanted}
    frozen = {n: p for n, p in all_params.items() if n not in wanted}
    buffers = dict(model.named_buffers())

    def one(trainable: Grads, sample: Mapping[str, torch.Tensor]):
        sample = {key: value.unsqueeze(0) for key, value in sample.items()}
        outputs = functional_call(model, ({**trainable, **frozen}, buffers), (sample["image"],))
        return loss_fn(outputs, sample)

    batched = vmap(grad(one, has_aux=has_aux), in_dims=(None, 0))
    return lambda samples: batched(params, samples)


def per_sample_grad_chunks(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                           loss_fn: SampleLoss, names: Iterable[str] | None = None,
                           chunk_size: int | None = None, has_aux: bool = False,
                           memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB,
                           keep_result: bool = False) -> Iterator[tuple[slice, object]]:
    """`per_sample_grads` chunk by chunk: yields (rows of the batch, that chunk's result), for a
    caller that reduces the gradients as they come (SSD sums their squares) and so never holds
    all of them. Chunks are sized by `per_sample_chunk` unless `chunk_size` is given."""
    count = len(batch["image"])
    if chunk_size is None:
        chunk_size, _ = per_sample_chunk(model, batch, names, memory_budget_mb, keep_result)
    compute = _per_sample_fn(model, loss_fn, names, has_aux)
    samples = {key: value for key, value in batch.items() if key != "id"}
    for start in range(0, count, chunk_size):
        rows = slice(start, min(start + chunk_size, count))
        yield rows, compute({key: value[rows] for key, value in samples.items()})


def per_sample_grads(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                     loss_fn: SampleLoss, names: Iterable[str] | None = None,
                     chunk_size: int | None = None, has_aux: bool = False,
                     memory_budget_mb: float = DEFAULT_MEMORY_BUDGET_MB):
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
    Returns:
        {name: (B, *parameter.shape)}; with has_aux, (that, aux with a leading B dimension),
        which gives e.g. the per-sample losses for free. Equal to one unchunked vmap.
    """
    count = len(batch["image"])
    grads: Grads = {}
    auxes = []
    for rows, part in per_sample_grad_chunks(model, batch, loss_fn, names, chunk_size, has_aux,
                                             memory_budget_mb, keep_result=True):
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


def set_grads(model: torch.nn.Module, grads: Mapping[str, torch.Tensor]) -> None:
    """Write `grads` into `.grad` of the named parameters (others untouched)."""
    for name, parameter in model.named_parameters():
        if name in grads:
            parameter.grad = grads[name].detach().to(parameter.dtype).clone()
