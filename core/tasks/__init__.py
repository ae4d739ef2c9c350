"""Tasks are data: what each task predicts, how it is trained and how it is scored.

A task is a `TaskSpec` (name, kind, channels); everything that depends on what it predicts lives
in its kind, a registered `TaskKind` (`core.tasks.base`), one file per kind:

    segmentation    per-pixel classes; cross-entropy; mIoU, pixel accuracy
    parts           human parts (segmentation on people, ignored elsewhere)
    saliency        binary per-pixel; cross-entropy; maxF, IoU
    edges           binary per-pixel; class-balanced cross-entropy; F-score at 0.5
    depth           per-pixel depth; masked L1; abs err, rel err, delta1
    normal          per-pixel unit normals; 1 - cosine; angle statistics, A11/A22/A30
    classification  one class per image; cross-entropy; accuracy

A new kind is one file: subclass `TaskKind`, decorate it with `register_kind`, import the module
(from your own package, or with ``--plugin MODULE``). `list_kinds()` names the registered kinds;
`KINDS` is the same tuple, read when accessed.
"""

# isort: off
from core.tasks.base import (
    DuplicateTaskKind,
    FoundTask,
    MetricAccumulator,
    TaskKind,
    UnknownTaskKind,
    get_kind,
    list_kinds,
    register_kind,
)
from core.tasks.spec import TaskSpec, delta_m

# The built-in kinds register themselves on import; this order is the order of a dataset's tasks.
from core.tasks import segmentation, parts, saliency, edges, depth, normal, classification  # noqa: F401
# isort: on

__all__ = ["KINDS", "DuplicateTaskKind", "FoundTask", "MetricAccumulator", "TaskKind", "TaskSpec",
           "UnknownTaskKind", "delta_m", "get_kind", "list_kinds", "register_kind"]


def __getattr__(name: str):
    if name == "KINDS":
        return list_kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
