"""Train a multi-task model (the original and the retrain oracle) and evaluate it per task.

The loss is the equal-weighted sum of the task losses. Every (instance, task) pair can be masked
out of the loss: the retrain oracle is the original recipe run from scratch with the forget pairs
masked, so it is exactly what the model would have been without that supervision.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from core import distributed
from core.device import select_device
from core.tasks import TaskSpec

MaskedPairs = Mapping[str, Collection[int]]
"""task name -> instance ids whose loss on that task is removed from training."""

ProgressCallback = Callable[[int, int, dict[str, float]], None]
"""(epoch done, total epochs, {task: mean train loss}) after each epoch."""


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def iterate_batches(dataset, ids: Sequence[int], batch_size: int,
                    generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of `dataset.batch(ids)`; shuffled when a generator is given."""
    order = list(ids)
    if generator is not None:
        order = [order[i] for i in torch.randperm(len(order), generator=generator).tolist()]
    for start in range(0, len(order), batch_size):
        yield dataset.batch(order[start:start + batch_size])


def pair_weights(ids: torch.Tensor, tasks: Sequence[str],
                 masked_pairs: MaskedPairs | None) -> dict[str, torch.Tensor]:
    """Per-task loss weights (B,) for a batch of instance ids (B,): 0 for a masked pair, else 1."""
    weights = {}
    for task in tasks:
        masked = (masked_pairs or {}).get(task, ())
        if masked:
            masked_ids = torch.as_tensor(sorted(masked), dtype=ids.dtype)
            weights[task] = (~torch.isin(ids, masked_ids)).float()
        else:
            weights[task] = torch.ones(ids.shape[0])
    return weights


def trained_ids(ids: Sequence[int], tasks: Sequence[str], masked_pairs: MaskedPairs | None) -> list[int]:
    """`ids` without the instances whose every task in `tasks` is masked, in the same order."""
    fully_masked = set(ids)
    for task in tasks:
        fully_masked &= set((masked_pairs or {}).get(task, ()))
    return [i for i in ids if i not in fully_masked]


def multitask_loss(outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor],
                   tasks: Mapping[str, TaskSpec],
                   weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """{task: weighted mean per-sample loss} for one batch."""
    return {name: task.loss(outputs[name], batch[name], None if weights is None else weights[name])
            for name, task in tasks.items()}


def _to(batch: Mapping[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Move a batch to `device`; images go channels-last, which convolutions run faster on."""
    moved = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
    if "image" in moved:
        moved["image"] = moved["image"].contiguous(memory_format=torch.channels_last)
    return moved


def train(model: torch.nn.Module, dataset, config: TrainConfig,
          masked_pairs: MaskedPairs | None = None, progress: ProgressCallback | None = None,
          show_bar: bool = False) -> list[dict[str, float]]:
    """Train `model` in place on the instances of `dataset` (an MTLDataset).

    Adam with a cosine learning-rate decay; no augmentation. Reproducible on CPU for a fixed
    `config.seed`. An instance whose every task is masked is left out of the batches entirely,
    so it never passes through the model (not even through BatchNorm's running statistics):
    training with those pairs masked is training without those instances. Returns the per-epoch
    history of mean task losses.
    """
    unknown = sorted(set(masked_pairs or {}) - set(dataset.tasks))
    if unknown:
        raise ValueError(f"masked_pairs names unknown tasks {unknown}; tasks: {list(dataset.tasks)}")
    ids = trained_ids(dataset.ids, list(dataset.tasks), masked_pairs)
    if not ids:
        raise ValueError(f"masked_pairs mask every task of all {len(dataset.ids)} instances; "
                         "nothing is left to train on")
    device = select_device(config.device)
    model.to(device, memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(ids) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    bar = tqdm(range(config.epochs), desc="train", unit="epoch", disable=not show_bar)
    if distributed.active():
        return _train_shared(model, dataset, ids, config, masked_pairs, progress, bar, device,
                             optimizer, scheduler, generator)
    for epoch in bar:
        sums = {name: 0.0 for name in dataset.tasks}
        batches = 0
        start = time.perf_counter()
        for batch in iterate_batches(dataset, ids, config.batch_size, generator):
            weights = pair_weights(batch["id"], list(dataset.tasks), masked_pairs)
            batch = _to(batch, device)
            weights = _to(weights, device)
            losses = multitask_loss(model(batch["image"]), batch, dataset.tasks, weights)
            bad = [name for name, value in losses.items() if not bool(torch.isfinite(value))]
            if bad:
                raise ValueError(f"training diverged in epoch {epoch + 1}: the loss of task "
                                 f"{bad[0]!r} is {float(losses[bad[0]])} on instances "
                                 f"{batch['id'].tolist()[:8]}; check those images and labels for "
                                 f"NaN or Inf, or lower lr (now {config.lr:g})")
            optimizer.zero_grad(set_to_none=True)
            sum(losses.values()).backward()
            optimizer.step()
            scheduler.step()
            for name, value in losses.items():
                sums[name] += float(value.detach())
            batches += 1
        record = {name: total / batches for name, total in sums.items()}
        history.append({"epoch": epoch + 1, "seconds": time.perf_counter() - start, **record})
        bar.set_postfix({name: f"{value:.3f}" for name, value in record.items()})
        if progress is not None:
            progress(epoch + 1, config.epochs, record)
    model.eval()
    return history


def _id_batches(ids: Sequence[int], batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """The ids of each batch of `iterate_batches(dataset, ids, batch_size, generator)`, in its
    order (the same draw from the generator)."""
    order = [ids[i] for i in torch.randperm(len(ids), generator=generator).tolist()]
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _train_shared(model: torch.nn.Module, dataset, ids: list[int], config: TrainConfig,
                  masked_pairs: MaskedPairs | None, progress: ProgressCallback | None, bar,
                  device: torch.device, optimizer: torch.optim.Optimizer, scheduler,
                  generator: torch.Generator) -> list[dict[str, float]]:
    """`train`'s loop under torchrun: DistributedDataParallel, with the batches of one process.

    Every rank draws the same shuffled batches as one process (`_id_batches`) and reads only
    its contiguous share of each (`core.distributed.shard_rows`): torch's DistributedSampler is
    not used, because it draws its own order and pads the last share by repeating instances,
    so two ranks would not train on what one trains on. The loss masks travel with the ids:
    each rank weighs its rows with `pair_weights` of their ids, so a masked pair has weight 0 on
    every rank and an instance masked on every task was dropped from `ids` before the shuffle
    (no rank reads it). Each task's loss is its weighted sum over this rank's rows divided by
    the whole batch's weight (known from the ids alone), times the number of ranks, which
    DistributedDataParallel's average of the gradients turns into exactly the one-process
    weighted mean. BatchNorm shares its batch statistics across the ranks
    (`core.distributed.synced_batchnorm`). A batch with fewer instances than ranks is computed
    whole by every rank (the average of equal gradients is that gradient). The reported losses
    are summed across ranks, so every rank sees the same values and stops together on a
    non-finite one.
    """
    from torch.nn.parallel import DistributedDataParallel

    from core.tasks.spec import _EPS

    tasks = list(dataset.tasks)
    world = distributed.world_size()
    history = []
    with distributed.synced_batchnorm(model, device):
        device_ids = None if device.type != "cuda" else [torch.cuda.current_device()]
        shared = DistributedDataParallel(model, device_ids=device_ids)
        for epoch in bar:
            sums = {name: 0.0 for name in tasks}
            batches = 0
            start = time.perf_counter()
            for whole in _id_batches(ids, config.batch_size, generator):
                split = len(whole) >= world
                rows = distributed.shard_rows(len(whole)) if split else slice(0, len(whole))
                every = pair_weights(torch.tensor(whole, dtype=torch.long), tasks, masked_pairs)
                totals = torch.stack([every[name].sum() for name in tasks]).clamp(min=_EPS)
                batch = _to(dataset.batch(whole[rows]), device)
                weights = _to({name: every[name][rows] for name in tasks}, device)
                outputs = shared(batch["image"])
                parts = {}
                for name, task in dataset.tasks.items():
                    losses = task.per_sample_loss(outputs[name], batch[name])
                    parts[name] = (weights[name].to(losses.dtype) * losses).sum()
                reported = torch.stack([parts[name].detach().float() for name in tasks])
                if split:
                    distributed.all_reduce(reported)
                values = dict(zip(tasks, (reported.cpu() / totals).tolist()))
                bad = [name for name, value in values.items() if not math.isfinite(value)]
                if bad:
                    raise ValueError(f"training diverged in epoch {epoch + 1}: the loss of task "
                                     f"{bad[0]!r} is {values[bad[0]]} on instances {whole[:8]}; "
                                     f"check those images and labels for NaN or Inf, or lower lr "
                                     f"(now {config.lr:g})")
                scale = world if split else 1
                loss = sum(parts[name] * (scale / float(total)) for name, total in zip(tasks, totals))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                for name, value in values.items():
                    sums[name] += value
                batches += 1
            record = {name: total / batches for name, total in sums.items()}
            history.append({"epoch": epoch + 1, "seconds": time.perf_counter() - start, **record})
            bar.set_postfix({name: f"{value:.3f}" for name, value in record.items()})
            if progress is not None:
                progress(epoch + 1, config.epochs, record)
        del shared
    model.eval()
    return history


@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, ids: Sequence[int] | None = None,
             batch_size: int = 64, device: str | torch.device | None = None
             ) -> dict[str, dict[str, float]]:
    """Split-level metrics {task: {metric: value}} of `model` on `ids` (default: all of dataset)."""
    device = select_device(device)
    was_training = model.training
    model.to(device).eval()
    accumulators = {name: task.accumulator() for name, task in dataset.tasks.items()}
    for batch in iterate_batches(dataset, dataset.ids if ids is None else ids, batch_size):
        batch = _to(batch, device)
        outputs = distributed.forward_whole(model, batch["image"])  # under torchrun: shared
        for name, accumulator in accumulators.items():
            accumulator.update(outputs[name], batch[name])
    model.train(was_training)
    return {name: accumulator.compute() for name, accumulator in accumulators.items()}


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return asdict(config)


def train_checkpoint(source, architecture: Mapping[str, Any] | None, config: TrainConfig,
                     masked_pairs: MaskedPairs | None = None,
                     progress: ProgressCallback | None = None, show_bar: bool = False,
                     backbone_weights: str | None = None):
    """Build (through the architecture registry), train and evaluate a model on a DataSource;
    returns (model, ModelCard).

    backbone_weights: a local file of pretrained encoder weights (`load_backbone_weights`),
    loaded before training and recorded in the card so the retrain oracle starts from it too.
    The card records the data source, the training recipe, the training instance ids, and
    per-task metrics on train and val plus those of the trivial (constant) predictor on val.
    """
    from core.checkpoints import ModelCard
    from core.models import build_model, load_backbone_weights
    from core.models.constant import ConstantModel

    train_set, val_set = source.open("train"), source.open("val")
    seed_everything(config.seed)
    model = build_model(architecture, list(train_set.tasks.values()))
    if backbone_weights:
        load_backbone_weights(model, backbone_weights)
    start = time.perf_counter()
    history = train(model, train_set, config, masked_pairs, progress, show_bar)
    seconds = time.perf_counter() - start
    trivial = ConstantModel.fit(train_set)
    recipe = {**config_dict(config), "data": source.to_dict(), "seconds": round(seconds, 1),
              "final_losses": {k: v for k, v in history[-1].items() if k in train_set.tasks},
              "masked_pairs": {t: sorted(ids) for t, ids in (masked_pairs or {}).items()}}
    if backbone_weights:
        recipe["backbone_weights"] = str(backbone_weights)
    card = ModelCard(
        benchmark=source.benchmark,
        tasks=[task.to_dict() for task in model.tasks.values()],
        architecture=dict(model.architecture),
        training=recipe,
        train_ids=list(train_set.ids),
        metrics={"train": evaluate(model, train_set, device=config.device),
                 "val": evaluate(model, val_set, device=config.device),
                 "trivial_val": evaluate(trivial, val_set, device="cpu")},
    )
    return model.cpu(), card
