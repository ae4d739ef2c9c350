"""A against B: whether two ledger runs can be contrasted (the dashboard's Contrast page, issue 21
part 5; docs/ARCHITECTURE.md section 14).

Every view of a run (attack, twin maps, layer similarity, per class) reads the forget, retain and
test instances of its request on its base model. Two runs are drawn side by side only when those
mean the same thing: the same base model (weights), the same forget instances, the same forgotten
tasks and the same dataset folder. `run_differences` names what differs, in words, from two
ledger rows (`core.ledger.Ledger.runs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

NAMES = ("A", "B")
"""How the contrast names the two runs' models in its frames (beside "original" and "retrain")."""


def _ids(ids: Iterable[int], shown: int = 6) -> str:
    ordered = sorted(ids)
    return ", ".join(map(str, ordered[:shown])) + (", ..." if len(ordered) > shown else "")


def _tasks(row: Mapping[str, Any]) -> str:
    return f"{', '.join(row['tasks'])} ({row['mode']}-task)"


def run_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """What keeps two ledger runs (rows of `Ledger.runs`: model_sha256, model_path, instances,
    tasks, mode, data_root) from being contrasted, one phrase per difference naming both values;
    empty when they share the base model and the forget request (instances, tasks, data folder)."""
    found = []
    if a["model_sha256"] != b["model_sha256"]:
        found.append(f"the base model: A was made on {Path(a['model_path']).name} (weights "
                     f"{str(a['model_sha256'])[:12]}), B on {Path(b['model_path']).name} (weights "
                     f"{str(b['model_sha256'])[:12]})")
    ours, theirs = set(a["instances"]), set(b["instances"])
    if ours != theirs:
        found.append(f"the forget instances: A forgets {len(ours)} ({_ids(ours)}), B forgets {len(theirs)} "
                     f"({_ids(theirs)}), {len(ours & theirs)} in common")
    if a["mode"] != b["mode"] or set(a["tasks"]) != set(b["tasks"]):
        found.append(f"the forgotten tasks: A forgets {_tasks(a)}, B forgets {_tasks(b)}")
    if (a.get("data_root") or "") != (b.get("data_root") or ""):
        found.append(f"the dataset folder: A reads {a.get('data_root') or 'the data its card names'}, "
                     f"B reads {b.get('data_root') or 'the data its card names'}")
    return found
