"""Pictures of inputs, targets and predictions: arrays in, (H, W, 3) uint8 RGB out.

Pure numpy, so the dashboard and reports draw the same thing. `render_task` asks the task's kind
how to draw it, like everything else about a task (see `core.tasks`); the kinds draw with the
helpers here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # core.tasks draws with this module, so it is not imported at run time
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


def binary_rgb(values: Any, low: tuple[int, int, int], high: tuple[int, int, int]) -> np.ndarray:
    """Shares in [0, 1] blended from colour `low` (0) to `high` (1): (H, W) float -> (H, W, 3) uint8.

    Negative values (-1 = ignore) are `IGNORE_RGB`; values above 1 are clipped.
    """
    values = _numpy(values).astype(np.float64)
    share = np.clip(values, 0, 1)[..., None]
    rgb = np.asarray(low, np.float64) + share * (np.asarray(high, np.float64) - np.asarray(low))
    rgb[values < 0] = IGNORE_RGB
    return rgb.round().astype(np.uint8)


def normals_rgb(normals: Any) -> np.ndarray:
    """Unit normals as colours (n + 1) / 2: (3, H, W) float in [-1, 1] -> (H, W, 3) uint8.

    All-zero (invalid) pixels are `IGNORE_RGB`.
    """
    normals = _numpy(normals).astype(np.float64)
    rgb = np.clip((normals.transpose(1, 2, 0) + 1) / 2, 0, 1) * 255
    rgb[~(normals != 0).any(0)] = IGNORE_RGB
    return rgb.round().astype(np.uint8)


def render_task(spec: TaskSpec, values: Any, reference: Any = None) -> np.ndarray:
    """One instance's target or prediction of a task as an (H, W, 3) uint8 picture.

    values, one instance (no batch axis), as in `TaskSpec`; for the built-in kinds:
      segmentation, parts  target (H, W) class ids or prediction (C, H, W) logits (argmax drawn)
      depth                (1, H, W); coloured on the valid range of `reference` (e.g. the ground
                           truth, so a prediction and its target share one scale), default its own
      normal               (3, H, W) unit vectors
      saliency, edges      target (H, W) in [0, 1] or prediction (1, H, W) logits (probability
                           drawn); saliency dark to white, edges white to dark
      classification       target () class id or prediction (C,) logits -> a flat tile of the
                           class colour
    """
    return spec.render(_numpy(values), None if reference is None else _numpy(reference))


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
