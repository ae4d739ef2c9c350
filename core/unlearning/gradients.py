"""Gradient helpers shared by the methods: per-sample gradients with torch.func, flattening,
and the losses every method combines (forget ascent, retain descent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch.func import functional_call, grad, vmap

Grads = dict[str, torch.Tensor]
SampleLoss = Callable[[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]], torch.Tensor]
"""(outputs {task: (1, ...)}, sample {key: (1, ...)}) -> scalar loss of one sample."""


def per_sample_grads(model: torch.nn.Module, batch: Mapping[str, torch.Tensor],
                     loss_fn: SampleLoss, names: Iterable[str] | None = None,
                     chunk_size: int | None = None, has_aux: bool = False):
    """Gradients of `loss_fn` for each sample of `batch`, in one vmap over torch.func.grad.

    Args:
        model: evaluated in its current mode (BatchNorm in eval mode uses running statistics).
        batch: {"image": (B, 3, H, W), task: (B, ...), ...}; every tensor has B rows.
        loss_fn: the loss of one sample (see `SampleLoss`).
        names: parameter names to differentiate (default: all); the others are held fixed.
        chunk_size: samples per vmap chunk, to bound memory (default: all at once).
        has_aux: `loss_fn` returns (loss, aux), aux a tensor or a dict of tensors of that sample.
    Returns:
        {name: (B, *parameter.shape)}; with has_aux, (that, aux with a leading B dimension),
        which gives e.g. the per-sample losses for free.
    """
    all_params = {n: p.detach() for n, p in model.named_parameters()}
    wanted = set(all_params if names is None else names)
    params = {n: p for n, p in all_params.items() if n in wanted}
    frozen = {n: p for n, p in all_params.items() if n not in wanted}
    buffers = dict(model.named_buffers())

    def one(trainable: Grads, sample: Mapping[str, torch.Tensor]):
        sample = {key: value.unsqueeze(0) for key, value in sample.items()}
        outputs = functional_call(model, ({**trainable, **frozen}, buffers), (sample["image"],))
        return loss_fn(outputs, sample)

    samples = {key: value for key, value in batch.items() if key != "id"}
    return vmap(grad(one, has_aux=has_aux), in_dims=(None, 0), chunk_size=chunk_size)(params, samples)


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
