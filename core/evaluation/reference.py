"""What the forget gap can tell apart: its noise floor on truly unseen instances.

The forget gap of a target task t is f_t = |m(test) - m(S)| / m(test) with S the forget set
(docs/ARCHITECTURE.md section 12.2). For a perfectly forgotten set, S looks like unseen data;
but a random set of
unseen instances of the forget set's size does not score exactly m(test) either: with a handful
of images its own gap is already several percent. `forget_gap_noise_floor` measures that floor:
the same statistic, computed with the original model, for random sets of held-out val instances
(never seen in training) of the forget set's size. A forget gap below the floor's upper end
cannot be told from "looks unseen".
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from core.evaluation.uis import relative_change
from core.training import evaluate, iterate_batches

NOISE_FLOOR_COLUMNS = ["task", "size", "pool", "draws", "mean", "low", "high"]


@torch.no_grad()
def _outputs_and_targets(model: torch.nn.Module, dataset, ids: Sequence[int], tasks: Sequence[str],
                         batch_size: int = 64) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{task: (outputs (N, ...), targets (N, ...))} of `model` on `ids`, on the CPU."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    parts: dict[str, tuple[list, list]] = {t: ([], []) for t in tasks}
    for batch in iterate_batches(dataset, ids, batch_size):
        outputs = model(batch["image"].to(device))
        for task in tasks:
            parts[task][0].append(outputs[task].float().cpu())
            parts[task][1].append(batch[task])
    model.train(was_training)
    return {t: (torch.cat(out), torch.cat(target)) for t, (out, target) in parts.items()}


def forget_gap_noise_floor(model: torch.nn.Module, data, size: int, tasks: Sequence[str] | None = None,
                           draws: int = 200, seed: int = 0, heldout: str = "test",
                           level: float = 0.95) -> pd.DataFrame:
    """The forget gap of random unseen sets of `size` instances: mean and interval over draws.

    Args:
        model: the original model (the one whose forget gap is measured).
        data: an `UnlearningData` built from the full val split; the unseen instances and the
            reference score m(test) both come from its `heldout` part ("test" for the report,
            "tuning" for tuning).
        size: instances per draw (the forget set's size); at most the part's size.
        tasks: tasks to measure (default: every task of the data).
        draws, seed: number of random sets, drawn without replacement within a set.
        level: coverage of the central interval over the draws.
    Returns:
        One row per task plus a row task="all" (the mean over tasks of each draw's gaps, the
        statistic of a full-task request; a task whose gap is undefined, its reference being 0,
        is left out of that mean as the leaderboard's forget gap leaves it out),
        `NOISE_FLOOR_COLUMNS`: size, pool (the part's size), draws, and mean, low, high of the
        forget gap in percent (the percentile interval of the draws).
    """
    dataset, pool = data.held_out(heldout)
    specs = dict(data.train.tasks)
    tasks = list(specs) if tasks is None else list(tasks)
    unknown = [t for t in tasks if t not in specs]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; accepted: {', '.join(specs)}")
    if not 1 <= size <= len(pool):
        raise ValueError(f"size {size} must be between 1 and the {len(pool)} instances of the "
                         f"{heldout} part")
    reference = evaluate(model, dataset, pool, device=next(model.parameters()).device)
    cached = _outputs_and_targets(model, dataset, pool, tasks)
    rng = np.random.default_rng(seed)
    gaps = np.empty((draws, len(tasks)))
    for d in range(draws):
        pick = torch.as_tensor(np.sort(rng.choice(len(pool), size=size, replace=False)))
        for k, task in enumerate(tasks):
            spec, accumulator = specs[task], specs[task].accumulator()
            accumulator.update(cached[task][0][pick], cached[task][1][pick])
            value = accumulator.compute()[spec.primary]
            gaps[d, k] = relative_change(reference[task][spec.primary], value)
    tail = (1 - level) / 2
    rows = []
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        overall = np.nanmean(gaps, axis=1)
    for task, column in [*zip(tasks, gaps.T), ("all", overall)]:
        column = 100 * column[np.isfinite(column)]
        low, high = (np.quantile(column, [tail, 1 - tail]) if len(column) else (np.nan, np.nan))
        rows.append({"task": task, "size": size, "pool": len(pool), "draws": draws,
                     "mean": float(column.mean()) if len(column) else np.nan,
                     "low": float(low), "high": float(high)})
    return pd.DataFrame(rows, columns=NOISE_FLOOR_COLUMNS)
