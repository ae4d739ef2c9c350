"""Data parallelism on torch.distributed: several processes (ranks) share one run.

A command started by `torchrun --nproc_per_node N -m core.cli unlearn ...` (or `train`) finds
the launcher's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), and `init`
joins the process group: nccl where the run's device is CUDA (rank r on GPU LOCAL_RANK), gloo on
the CPU. Nothing here is home-made transport: every exchange is a torch.distributed collective.

How a run is shared (docs/ARCHITECTURE.md section 17):
- every rank draws the same batches (same seeds, same generators), and each computes only its
  own contiguous share of a batch's rows (`shard_rows`): the forward and backward passes of the
  model (`replicated`), the per-sample gradients, the rows behind the subspace bases, the
  calibration losses and the evaluation forwards;
- what a share produces is put back together before anything depends on it: the rows of other
  ranks are summed into place (`gather_rows`: each rank contributes zeros elsewhere, so the
  result is exactly the single-process tensor), and each parameter's gradient is summed across
  ranks the moment autograd forms it (`replicated`), before any method projects or combines it;
- so every rank takes the same decisions and applies the same update, and the weights equal a
  one-process run's up to the order in which float sums are taken.

With one process (no launcher, or WORLD_SIZE 1) every function here is a no-op that returns its
input: the single-process path runs no collective and is unchanged.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.weak import WeakIdKeyDictionary

LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
"""What torchrun (or any torch.distributed launcher) sets for each process."""

TIMEOUT_VARIABLE = "MTU_DIST_TIMEOUT_S"
"""Seconds a collective may wait for the other ranks before the run fails (default 1800)."""

T = TypeVar("T")


class DistributedError(ValueError):
    """A run that cannot go on across its ranks: a bad launch, or another rank refused the run."""


_owned = False  # whether `init` created the process group (and so `shutdown` destroys it)


def launched() -> bool:
    """Whether a launcher started this process as one of several ranks (WORLD_SIZE > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def init(device: str | torch.device | None = "auto") -> bool:
    """Join the process group a launcher set up; True when this process is one of several
    ranks, False (nothing done) otherwise. `device` is the run's device choice: CUDA gets nccl
    for CUDA tensors (rank r on GPU LOCAL_RANK) and gloo for CPU ones (the before / after
    evaluation runs on the CPU); anything else gloo."""
    global _owned
    if not launched():
        return False
    if dist.is_initialized():
        return True
    missing = [name for name in LAUNCHER_VARIABLES if not os.environ.get(name)]
    if missing:
        raise DistributedError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} says this is one of several "
                               f"processes, but {', '.join(missing)} is not set; start the command "
                               "with torchrun (e.g. torchrun --nproc_per_node 2 -m core.cli unlearn ...)")
    from core.device import select_device

    chosen = select_device(device)
    backend = "gloo"
    if chosen.type == "cuda":
        local = int(os.environ["LOCAL_RANK"])
        if local >= torch.cuda.device_count():
            raise DistributedError(f"LOCAL_RANK {local} has no GPU: this machine has "
                                   f"{torch.cuda.device_count()}; start at most that many processes "
                                   "per machine (--nproc_per_node)")
        torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"  # nccl for CUDA tensors, gloo for what stays on the CPU
    timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_VARIABLE, "1800")))
    dist.init_process_group(backend, timeout=timeout)
    _owned = True
    return True


def shutdown() -> None:
    """Leave the process group that `init` joined (no-op otherwise)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


@contextlib.contextmanager
def session(device: str | torch.device | None = "auto") -> Iterator[bool]:
    """`init` on entry, `shutdown` on exit; yields whether this process is one of several ranks.
    After a run that ended well the ranks leave together (a `barrier` first): a rank that
    destroys its gloo group while rank 0 still writes can abort the process. After an error a
    rank leaves at once; the launcher stops the others."""
    started = init(device)
    try:
        yield started
        if started:
            barrier()
    finally:
        if started:
            shutdown()


def active() -> bool:
    """Whether this process shares its run with other ranks (a process group of 2 or more)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 with one process)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes share the run (1 with one process)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this is rank 0, the one that prints and writes (True with one process)."""
    return rank() == 0


def describe() -> str:
    """"rank r of w" (empty with one process), for messages."""
    return f"rank {rank()} of {world_size()}" if active() else ""


# ---------------------------------------------------------------- shares of a batch


def shard_rows(count: int, of_rank: int | None = None, world: int | None = None) -> slice:
    """The contiguous rows [count * r // w, count * (r + 1) // w) of `count` that rank r takes:
    shares differ by at most one row and, in rank order, cover every row once."""
    r = rank() if of_rank is None else of_rank
    w = world_size() if world is None else world
    return slice(count * r // w, count * (r + 1) // w)


def shard(items: Sequence[T]) -> list[T]:
    """This rank's contiguous share of `items` (all of them with one process)."""
    return list(items[shard_rows(len(items))])


_MARKED: WeakIdKeyDictionary = WeakIdKeyDictionary()


def mark(batch_tensor: Tensor) -> Tensor:
    """Mark a batch's leading dimension as shared by the ranks (what `UnlearningContext.batch`
    does to every batch's images): a model under `replicated` then computes only this rank's
    rows of it, and `rows_of` tells the helpers which rows those are. Returns the tensor."""
    if active():
        _MARKED[batch_tensor] = len(batch_tensor)
    return batch_tensor


def marked(tensor: Any) -> bool:
    """Whether `tensor` is a batch marked by `mark` (never with one process)."""
    if not _MARKED or not isinstance(tensor, Tensor):
        return False
    try:
        return tensor in _MARKED
    except TypeError:  # a tensor that takes no weak reference (e.g. inside a vmap)
        return False


def rows_of(tensor: Any) -> slice | None:
    """This rank's rows of a marked batch when every rank has at least one; None for a batch
    that is not marked, for one with fewer rows than ranks, and with one process."""
    if not marked(tensor):
        return None
    count = len(tensor)
    return shard_rows(count) if count >= world_size() else None


# ---------------------------------------------------------------- collectives


def all_reduce(tensor: Tensor) -> Tensor:
    """Sum `tensor` over the ranks, in place; returned. No-op with one process."""
    if active():
        dist.all_reduce(tensor)
    return tensor


def barrier() -> None:
    """Wait until every rank gets here; a rank that stopped makes it fail. No-op with one process."""
    if active():
        dist.barrier()


def gather_rows(local: Tensor, rows: slice, count: int) -> Tensor:
    """The whole (count, ...) tensor from each rank's rows `rows` of it: each rank puts its rows
    into zeros and the ranks' tensors are summed, so every row is exactly its owner's (x + 0 is
    x in floating point). Not differentiable (see `replicated` for the model's outputs)."""
    whole = local.new_zeros((count, *local.shape[1:]))
    whole[rows] = local.detach()
    return all_reduce(whole)


def gather_tree(tree: Any, rows: slice, count: int) -> Any:
    """`gather_rows` on every tensor of a tensor, a mapping or a tuple / list of them (in their
    order, the same on every rank); other values are returned as they are."""
    if isinstance(tree, Tensor):
        return gather_rows(tree, rows, count)
    if isinstance(tree, Mapping):
        return {key: gather_tree(value, rows, count) for key, value in tree.items()}
    if isinstance(tree, tuple | list):
        return type(tree)(gather_tree(value, rows, count) for value in tree)
    return tree


def agree(error: BaseException | None) -> None:
    """Every rank says whether it may go on (`error`: why not, or None); when any rank may not,
    every rank raises: the rank that refused its own error, the others a `DistributedError`
    naming that rank and its reason. No-op with one process (the error, if any, is raised)."""
    if not active():
        if error is not None:
            raise error
        return
    reasons: list[str | None] = [None] * world_size()
    dist.all_gather_object(reasons, None if error is None else f"{type(error).__name__}: {error}")
    if error is not None:
        raise error
    for index, reason in enumerate(reasons):
        if reason is not None:
            raise DistributedError(f"rank {index} of {world_size()} refused the run ({reason}); "
                                   "nothing was written")


_LOST_SIGNS = ("Connection closed by peer", "Connection reset by peer", "remote worker",
               "Broken pipe", "communicator was aborted", "Timed out", "timed out")


def lost_rank(error: BaseException) -> bool:
    """Whether `error` is a collective that failed because another rank stopped or stopped
    answering (a torch.distributed error, gloo's closed connection, an aborted nccl
    communicator, a timeout), rather than a fault of this rank."""
    if isinstance(error, getattr(dist, "DistError", ())):
        return True
    return isinstance(error, RuntimeError) and any(sign in str(error) for sign in _LOST_SIGNS)


# ---------------------------------------------------------------- one model, several ranks


def _map_tensors(tree: Any, function: Callable[[Tensor], Tensor]) -> Any:
    if isinstance(tree, Tensor):
        return function(tree)
    if isinstance(tree, Mapping):
        return {key: _map_tensors(value, function) for key, value in tree.items()}
    if isinstance(tree, tuple | list):
        return type(tree)(_map_tensors(value, function) for value in tree)
    return tree


def _whole_from_share(local: Tensor, rows: slice, count: int) -> Tensor:
    """The (count, ...) output of a batch from this rank's rows `local`: the other ranks' rows
    arrive as constants, this rank's stay attached to its graph, so a loss over the whole batch
    sends gradient only into this rank's own computation."""
    whole = gather_rows(local, rows, count)
    return torch.cat([whole[:rows.start], local, whole[rows.stop:]])


def _own_rows_gradient(whole: Tensor, rows: slice) -> Tensor:
    """`whole` as it is, with gradient flowing back only through rows `rows` (possibly none)."""
    return torch.cat([whole[:rows.start].detach(), whole[rows], whole[rows.stop:].detach()])


class _SharedForward:
    """Forward hooks that make one model compute only this rank's rows of a marked batch and
    return the whole batch's outputs (`replicated`)."""

    def __init__(self) -> None:
        self.calls: list[tuple[slice, int, bool] | None] = []

    def before(self, module: nn.Module, args: tuple) -> tuple | None:
        images = args[0] if args else None
        if not isinstance(images, Tensor) or not marked(images):
            self.calls.append(None)
            return None
        count = len(images)
        split = count >= world_size() and not any(m.training for m in module.modules())
        self.calls.append((shard_rows(count), count, split))
        return (images[shard_rows(count)], *args[1:]) if split else None

    def after(self, module: nn.Module, args: tuple, output: Any) -> Any:
        call = self.calls.pop()
        if call is None:
            return None
        rows, count, split = call
        if split:
            return _map_tensors(output, lambda local: _whole_from_share(local, rows, count))
        return _map_tensors(output, lambda whole: _own_rows_gradient(whole, rows))


def _summed_gradient(grad: Tensor) -> Tensor:
    total = grad.detach().clone(memory_format=torch.contiguous_format)
    return all_reduce(total)


@contextlib.contextmanager
def replicated(model: nn.Module, *frozen: nn.Module) -> Iterator[None]:
    """Run `model` (the one being changed) and `frozen` models (read only) data-parallel while
    inside: a call on a marked batch computes this rank's rows only and returns the whole
    batch's outputs (the others' rows as constants), and every gradient autograd forms for one
    of `model`'s parameters (`backward` or `torch.autograd.grad`) is summed across the ranks as
    it is formed. A loss over the whole batch then has, on every rank, exactly the gradient it
    has in one process, before any method reads, projects or combines it.

    Where a module runs in training mode (BatchNorm on batch statistics: samples interact) or a
    batch has fewer rows than there are ranks, every rank computes the whole batch and keeps
    the gradient of its own rows only, which sums to the same. No-op with one process.

    The gradients are summed one parameter at a time, in the order autograd forms them, which
    is the same on every rank since every rank builds the same graph; the sums are exact up to
    float addition order, so the ranks' weights stay identical to each other.
    """
    if not active():
        yield
        return
    handles = []
    for each in (model, *frozen):
        hooks = _SharedForward()
        handles.append(each.register_forward_pre_hook(hooks.before))
        handles.append(each.register_forward_hook(hooks.after))
    handles += [parameter.register_hook(_summed_gradient) for parameter in model.parameters()
                if parameter.requires_grad]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def forward_whole(model: nn.Module, images: Tensor) -> Any:
    """`model(images)` without a graph, each rank computing its own rows (`shard_rows`) and the
    whole batch's outputs put together on every rank (`gather_rows`); `model(images)` with one
    process, or where some rank would have no row."""
    count = len(images)
    if not active() or count < world_size():
        return model(images)
    rows = shard_rows(count)
    return gather_tree(model(images[rows]), rows, count)


# ---------------------------------------------------------------- BatchNorm across ranks


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training-mode statistics are those of the whole batch across the ranks,
    for tensors on the CPU, which `torch.nn.SyncBatchNorm` refuses. The sums go through
    `torch.distributed.nn.functional.all_reduce`, which is differentiable (its backward sums the
    incoming gradients across the ranks), so the gradient through the shared statistics is the
    one-process gradient. Mean first, then the centred second moment (two passes, as the
    single-process kernel). In eval mode it is plain BatchNorm."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if not self.training or not active():
            return super().forward(input)
        from torch.distributed.nn.functional import all_reduce as differentiable_sum

        dims = [0, *range(2, input.dim())]
        shape = [1, -1] + [1] * (input.dim() - 2)
        count = torch.tensor([input.numel() // max(input.shape[1], 1)], dtype=input.dtype,
                             device=input.device)
        totals = differentiable_sum(torch.cat([input.sum(dims), count]))
        n = totals[-1]
        mean = totals[:-1] / n
        centred = input - mean.view(shape)
        var = differentiable_sum(centred.pow(2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            factor = 0.0 if self.momentum is None else self.momentum
            if self.num_batches_tracked is not None:
                self.num_batches_tracked.add_(1)
                if self.momentum is None:
                    factor = 1.0 / float(self.num_batches_tracked)
            with torch.no_grad():
                unbiased = var.detach() * (n.detach() / (n.detach() - 1).clamp(min=1))
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


@contextlib.contextmanager
def synced_batchnorm(model: nn.Module, device: torch.device) -> Iterator[nn.Module]:
    """While inside, every BatchNorm of `model` is replaced by one that shares its statistics
    across the ranks (`torch.nn.SyncBatchNorm` on CUDA, `GlooSyncBatchNorm` elsewhere), holding
    the same parameter and buffer tensors; the original modules are put back on exit. No-op
    with one process."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    if active():
        kind = nn.SyncBatchNorm if device.type == "cuda" else GlooSyncBatchNorm
        for parent in list(model.modules()):
            for name, child in list(parent.named_children()):
                if not isinstance(child, nn.modules.batchnorm._BatchNorm):
                    continue
                synced = kind(child.num_features, child.eps, child.momentum, child.affine,
                              child.track_running_stats)
                for attribute in ("weight", "bias", "running_mean", "running_var",
                                  "num_batches_tracked"):
                    setattr(synced, attribute, getattr(child, attribute))
                synced.train(child.training)
                setattr(parent, name, synced)
                swapped.append((parent, name, child))
    try:
        yield model
    finally:
        for parent, name, child in reversed(swapped):
            setattr(parent, name, child)
