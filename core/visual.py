"""Pictures of inputs, targets and predictions: arrays in, (H, W, 3) uint8 RGB out.

Pure numpy, so the dashboard and reports draw the same thing. `render_task` looks the drawing up
by the task's kind, like everything else about a task (see `core.tasks`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from core.tasks import TaskSpec

PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (219, 219, 141), (158, 218, 229), (57, 59, 121),
], dtype=np.uint8)
"""Class colours: tab10, then its light tints (light grey swapped for indigo); repeats after 20."""

IGNORE_RGB = (0, 0, 0)
"""Colour of ignored labels and invalid depth or normal pixels."""

VIRIDIS = np.array([
    (68, 1, 84), (71, 45, 123), (59, 82, 139), (44, 114, 142), (33, 145, 140),
    (40, 174, 128), (94, 201, 98), (173, 220, 48), (253, 231, 37),
], dtype=np.float64)
"""Viridis sampled at 9 even steps; `depth_rgb` interpolates linearly between them."""

THUMBNAIL_SIZE = 32
"""Side of the flat tile drawn for an image-level (classification) label."""


def _numpy(values: Any) -> np.ndarray:
    """A numpy array from an array or a (CPU or GPU, maybe grad-tracking) torch tensor."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def image_rgb(image: Any) -> np.ndarray:
    """An input image: (3, H, W) float in [0, 1] (values outside are clipped) -> (H, W, 3) uint8."""
    image = _numpy(image)
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image has shape {image.shape}; expected (3, H, W)")
    return (np.clip(image.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def segmentation_rgb(labels: Any, n_classes: int, ignore: int = -1) -> np.ndarray:
    """Class ids coloured by `PALETTE`: (H, W) int in 0..n_classes-1 (or `ignore`) -> (H, W, 3) uint8.

    Ignored pixels are `IGNORE_RGB`. Raises ValueError for any other label outside the classes.
    """
    labels = _numpy(labels).astype(np.int64)
    valid = labels != ignore
    bad = valid & ((labels < 0) | (labels >= n_classes))
    if bad.any():
        raise ValueError(f"label {int(labels[bad][0])} is outside the {n_classes} classes; labels "
                         f"must lie in 0..{n_classes - 1}, or be {ignore} to ignore a pixel")
    rgb = PALETTE[np.where(valid, labels, 0) % len(PALETTE)]
    rgb[~valid] = IGNORE_RGB
    return rgb


def depth_rgb(depth: Any, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Depth through viridis (near = dark): (H, W) float -> (H, W, 3) uint8.

    Pixels <= 0 are invalid and drawn `IGNORE_RGB`. vmin, vmax: the depths mapped to the ends of
    the colour map (values beyond are clipped); default the range of the valid pixels.
    """
    depth = _numpy(depth).astype(np.float64)
    valid = depth > 0
    if valid.any():
        vmin = depth[valid].min() if vmin is None else vmin
        vmax = depth[valid].max() if vmax is None else vmax
    else:
        vmin, vmax = 0.0, 1.0
    scaled = np.clip((depth - vmin) / max(vmax - vmin, 1e-12), 0, 1) * (len(VIRIDIS) - 1)
    low = np.minimum(scaled.astype(np.int64), len(VIRIDIS) - 2)
    rgb = VIRIDIS[low] + (scaled - low)[..., None] * (VIRIDIS[low + 1] - VIRIDIS[low])
    rgb[~valid] = IGNORE_RGB
    return rgb.round().astype(np.uint8)


def normals_rgb(normals: Any) -> np.ndarray:
    """Unit normals as colours (n + 1) / 2: (3, H, W) float in [-1, 1] -> (H, W, 3) uint8.

    All-zero (invalid) pixels are `IGNORE_RGB`.
    """
    normals = _numpy(normals).astype(np.float64)
    rgb = np.clip((normals.transpose(1, 2, 0) + 1) / 2, 0, 1) * 255
    rgb[~(normals != 0).any(0)] = IGNORE_RGB
    return rgb.round().astype(np.uint8)


def _labels(values: np.ndarray, class_axis: int) -> np.ndarray:
    """Targets (class ids) as they are; predictions (logits, one more axis) by their argmax."""
    return values.argmax(0) if values.ndim > class_axis else values


def _segmentation(spec: TaskSpec, values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    return segmentation_rgb(_labels(values, 2), spec.channels)


def _depth(spec: TaskSpec, values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    scale = values if reference is None else reference
    valid = scale[scale > 0]
    return depth_rgb(values[0], *((valid.min(), valid.max()) if valid.size else (None, None)))


def _normal(spec: TaskSpec, values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    return normals_rgb(values)


def _classification(spec: TaskSpec, values: np.ndarray, reference: np.ndarray | None) -> np.ndarray:
    return segmentation_rgb(np.full((THUMBNAIL_SIZE, THUMBNAIL_SIZE), _labels(values, 0)), spec.channels)


_RENDERERS: dict[str, Callable[[TaskSpec, np.ndarray, np.ndarray | None], np.ndarray]] = {
    "segmentation": _segmentation,
    "depth": _depth,
    "normal": _normal,
    "classification": _classification,
}


def render_task(spec: TaskSpec, values: Any, reference: Any = None) -> np.ndarray:
    """One instance's target or prediction of a task as an (H, W, 3) uint8 picture.

    values, one instance (no batch axis), as in `TaskSpec`:
      segmentation   target (H, W) class ids or prediction (C, H, W) logits (argmax is drawn)
      depth          (1, H, W); coloured on the valid range of `reference` (e.g. the ground
                     truth, so a prediction and its target share one scale), default its own
      normal         (3, H, W) unit vectors
      classification target () class id or prediction (C,) logits -> a flat tile of the class colour
    """
    return _RENDERERS[spec.kind](spec, _numpy(values), None if reference is None else _numpy(reference))


def instance_panels(tasks: Mapping[str, TaskSpec], batch: Mapping[str, Any],
                    predictions: Mapping[str, Mapping[str, Any]], index: int) -> list[tuple[str, np.ndarray]]:
    """The pictures of instance `index` of a batch: its input, then per task the truth and each
    model's prediction.

    tasks: {name: spec}; batch: `MTLDataset.batch` output ("image" (B, 3, H, W) and one target
    per task); predictions: {label: a model's {task: (B, ...)} outputs on that batch}, e.g.
    {"prediction": ...} or {"before": ..., "after": ...}.
    Returns [(caption, (H, W, 3) uint8)], e.g. ("input", ...), ("depth truth", ...),
    ("depth before", ...), ...
    """
    panels = [("input", image_rgb(batch["image"][index]))]
    for name, spec in tasks.items():
        truth = batch[name][index]
        panels.append((f"{name} truth", render_task(spec, truth)))
        panels += [(f"{name} {label}", render_task(spec, outputs[name][index], reference=truth))
                   for label, outputs in predictions.items()]
    return panels
