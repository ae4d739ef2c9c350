"""A run's result in one plain sentence, for a person who reads no leaderboard.

`verdict(leaderboard, scores, method, instances, tasks, kept_tasks)` is a pure function of the
frames of a `core.evaluation.Comparison` (the original model, the run's method and, when it was
trained, the retrain oracle scored on one request). The sentence says, in this order:

- what was forgotten: the method, how many training instances (their ids) and on which tasks;
- what changed on the forget set: each forgotten task's primary metric on the forget images,
  before and after (and the oracle's, the level of a model that never saw them);
- what it cost: the mean relative change of each task's primary metric on the retained
  training images (the fixed retain sample) and on the test set, and in partial mode on the kept
  tasks of the forget images, all against the original;
- what a membership attack sees: the attack's AUC on the forget images against unseen images
  (0.5 = indistinguishable), with the original's and the oracle's AUC as references;
- whether the run ended closer to the retrain oracle than the original was (the leaderboard's
  `oracle_gap`: 100 x the mean |primary metric - the oracle's| over splits and tasks), or that
  without an oracle this is not measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

MAX_IDS = 8
"""At most this many id groups are written out; the rest are counted."""


def id_ranges(ids: Sequence[int], limit: int = MAX_IDS) -> str:
    """Sorted ids as "3, 17, 40-45", runs of consecutive ids as ranges; past `limit` groups,
    ", ... (N in all)"."""
    values = sorted({int(i) for i in ids})
    groups: list[tuple[int, int]] = []
    for value in values:
        if groups and value == groups[-1][1] + 1:
            groups[-1] = (groups[-1][0], value)
        else:
            groups.append((value, value))
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in groups[:limit])
    return text + (f", ... ({len(values)} in all)" if len(groups) > limit else "")


def _and(items: Sequence[str]) -> str:
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _primary(scores: pd.DataFrame, model: str, split: str) -> dict[str, tuple[str, float]]:
    """{task: (primary metric, value)} of `model` on `split`."""
    rows = scores[(scores["model"] == model) & (scores["split"] == split)]
    if "primary" in rows:
        rows = rows[rows["primary"].astype(bool)]
    return {row.task: (str(row.metric), float(row.value)) for row in rows.itertuples(index=False)}


def relative_change(scores: pd.DataFrame, model: str, split: str, reference: str = "original",
                    tasks: Sequence[str] | None = None) -> float:
    """100 x the mean over tasks (all of the split's, or `tasks`) of (m_model - m_reference) /
    m_reference of the primary metric m on `split`: negative is a loss. NaN when no task has a
    finite, non-zero reference."""
    ours, theirs = _primary(scores, model, split), _primary(scores, reference, split)
    changes = [(ours[t][1] - theirs[t][1]) / theirs[t][1]
               for t in (tasks if tasks is not None else list(theirs))
               if t in ours and t in theirs and _finite(theirs[t][1]) and theirs[t][1] != 0]
    return 100 * sum(changes) / len(changes) if changes else math.nan


def _value(board: pd.DataFrame, model: str, column: str) -> float:
    if model not in board.index or column not in board.columns:
        return math.nan
    value = board.at[model, column]
    return float(value) if _finite(value) else math.nan


def verdict(leaderboard: pd.DataFrame, scores: pd.DataFrame, method: str, instances: Sequence[int],
            tasks: Sequence[str], kept_tasks: Sequence[str] = (), original: str = "original",
            oracle: str = "retrain", oracle_exact: bool = True) -> str:
    """One plain sentence on a run's result (see the module's docstring).

    Args:
        leaderboard, scores: a `Comparison`'s frames, with rows for `original`, `method` and,
            when it was trained, `oracle`.
        method: the run's model in the frames (the method's name).
        instances: the forgotten training ids; tasks: the forgotten tasks; kept_tasks: the tasks
            kept on those images (partial mode), empty in full mode.
        oracle_exact: False when the oracle was retrained without the model's own recipe (an
            imported model): it is then called approximate.
    """
    board = leaderboard.set_index("model")
    has_oracle = oracle in set(scores["model"])
    oracle_name = "the retrain oracle" if oracle_exact else "the approximate retrain oracle"
    count = len(set(instances))
    noun = "training instance" if count == 1 else "training instances"
    on = (f"on {_and(list(tasks))} only, keeping {_and(list(kept_tasks))}" if kept_tasks
          else f"on every task ({_and(list(tasks))})")
    parts = [f"{method} forgot {count} {noun} (ids {id_ranges(instances)}) {on}"]

    before, after = _primary(scores, original, "forget"), _primary(scores, method, "forget")
    reference = _primary(scores, oracle, "forget") if has_oracle else {}
    changes = []
    for task in tasks:
        if task not in before or task not in after:
            continue
        metric, value = after[task]
        change = f"{task}'s {metric} went from {before[task][1]:.3f} to {value:.3f}"
        if task in reference:
            change += f" ({oracle_name.removeprefix('the ')}: {reference[task][1]:.3f})"
        changes.append(change)
    if changes:
        parts[0] += ": on those images " + _and(changes)

    retain, test = (relative_change(scores, method, split, original) for split in ("retain", "test"))
    costs = [f"{where} by {value:+.1f}%" for where, value in
             (("the retained training images", retain), ("the test set", test)) if _finite(value)]
    if kept_tasks:
        kept = relative_change(scores, method, "kept", original, list(kept_tasks))
        if _finite(kept):
            costs.append(f"the kept {'task' if len(kept_tasks) == 1 else 'tasks'} on the forget images "
                         f"by {kept:+.1f}%")
    if costs:
        parts.append(f"it changed {_and(costs)} (each task's primary metric, relative to the original)")

    auc = _value(board, method, "mia_auc")
    if _finite(auc):
        references = ["0.5 = indistinguishable"]
        if _finite(first := _value(board, original, "mia_auc")):
            references.append(f"before unlearning {first:.2f}")
        if has_oracle and _finite(theirs := _value(board, oracle, "mia_auc")):
            references.append(f"{oracle_name.removeprefix('the ')} {theirs:.2f}")
        parts.append(f"a membership attack tells the forget images from unseen ones with AUC {auc:.2f} "
                     f"({'; '.join(references)})")
    else:
        parts.append("no membership attack was run")

    ours, theirs = _value(board, method, "oracle_gap"), _value(board, original, "oracle_gap")
    if has_oracle and _finite(ours) and _finite(theirs):
        closer = "ended closer to" if ours < theirs else "did not end closer to"
        parts.append(f"and it {closer} {oracle_name} than the original was (mean gap of the primary "
                     f"metrics {ours:.1f} against {theirs:.1f} points)")
    else:
        parts.append("and without a retrain oracle for this request, closeness to it is not measured")
    return "; ".join(parts) + "."


def run_verdict(comparison, method: str, request, oracle_exact: bool = True) -> str:
    """`verdict` of a `Comparison` and the `ForgetRequest` it scored."""
    return verdict(comparison.leaderboard, comparison.scores, method, list(request.instances),
                   list(request.tasks), list(request.kept_tasks), oracle_exact=oracle_exact)
