"""Looking at the training instances before picking what to forget: a per-instance table of
every task's metrics with a 2-D map of the shared features, and predictions for thumbnails
(typed ids are parsed by `core.requests.parse_ids`).

The model is read only: it runs in eval mode under `torch.no_grad` and is left as it was given.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import cast

import numpy as np
import pandas as pd
import torch

from core.models import ProvidesFeatures, has_features
from core.training import iterate_batches


def pca_axes(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), axes (k, D), k <= 2) of the rows' two leading principal components: the top
    right singular vectors of the centred rows, each signed so that its largest-magnitude
    loading is positive (equal input, equal axes); axes of numerical noise are dropped."""
    rows = np.asarray(features, dtype=np.float64)
    mean = rows.mean(0)
    _, sigma, axes = np.linalg.svd(rows - mean, full_matrices=False)
    axes = axes[:2][sigma[:2] > 1e-9 * sigma.max(initial=0.0)]
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    return mean, axes * signs[:, None]


def project(features: np.ndarray, mean: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Rows on `pca_axes`' axes: (N, D) -> (N, 2) float64, 0 in a column without an axis."""
    projection = np.zeros((len(features), 2))
    projection[:, :len(axes)] = (np.asarray(features, dtype=np.float64) - mean) @ axes.T
    return projection


def pca_2d(features: np.ndarray) -> np.ndarray:
    """The two leading principal components of each row: (N, D) -> (N, 2) float64.

    Centres the rows and projects them on the top two right singular vectors. Each axis is
    signed so that its largest-magnitude loading is positive, so equal input gives equal output.
    Columns beyond the rank of the centred data (e.g. N = 1) are 0.
    """
    return project(features, *pca_axes(features))


def _pool(feature: torch.Tensor) -> torch.Tensor:
    """One vector per image: (B, C, h, w) averaged over pixels, (B, N, C) tokens over N,
    (B, C) as it is."""
    if feature.dim() == 4:
        return feature.mean(dim=(2, 3))
    if feature.dim() == 3:
        return feature.mean(dim=1)
    return feature.reshape(feature.shape[0], -1)


def _forward(model: torch.nn.Module, dataset, ids: Sequence[int], batch_size: int
             ) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor | None, dict[str, torch.Tensor]]]:
    """(batch, pooled features (B, D) or None, outputs {task: (B, ...)}) per batch, on CPU.

    Features: every feature map of `model.features` (`ProvidesFeatures`), averaged over its
    pixels and concatenated; None for a model that provides no features.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in iterate_batches(dataset, ids, batch_size):
                images = batch["image"].to(device)
                if not has_features(model):
                    yield batch, None, {name: out.cpu() for name, out in model(images).items()}
                    continue
                encoder = cast(ProvidesFeatures, model)
                features = encoder.features(images)
                pooled = torch.cat([_pool(f) for f in features], dim=1)
                size = (images.shape[-2], images.shape[-1])
                outputs = {name: out.cpu() for name, out in encoder.decode(features, size).items()}
                yield batch, pooled.cpu(), outputs
    finally:
        model.train(was_training)


def instance_table(model: torch.nn.Module, dataset, ids: Sequence[int], batch_size: int = 64
                   ) -> tuple[pd.DataFrame, np.ndarray]:
    """Per-instance scores and a 2-D map of the training instances, from one pass of the model.

    Args:
        model: a `MultiTaskModel`; left in the mode it was given. The map needs its
            encoder features (`ProvidesFeatures`); without them "x" and "y" are NaN.
        dataset: an MTLDataset (or subset) holding `ids`, with `.tasks` {name: TaskSpec}.
        ids: the instance ids to score, e.g. the training ids.
    Returns:
        table: one row per id, in the order of `ids`: "id", "x", "y", then for each task of
            `dataset.tasks` its per-image metrics and loss as "<task>:<metric>" (NaN where an
            image has no valid pixel; see `TaskSpec.per_image_metrics`).
        projection: (N, 2) float64, the x and y columns: `pca_2d` of the pooled encoder
            features (NaN when the model provides none).
    """
    if not len(ids):
        raise ValueError("instance_table needs at least one instance id")
    pooled_rows, scores = [], []
    for batch, pooled, outputs in _forward(model, dataset, ids, batch_size):
        pooled_rows.append(np.full((len(batch["id"]), 2), np.nan) if pooled is None
                        else pooled.double().numpy())
        scores.append({f"{name}:{metric}": values.double().numpy()
                       for name, spec in dataset.tasks.items()
                       for metric, values in spec.per_image_metrics(outputs[name], batch[name]).items()})
    features = np.concatenate(pooled_rows)
    projection = features if np.isnan(features).all() else pca_2d(features)
    table = pd.DataFrame({"id": np.asarray(ids, dtype=np.int64), "x": projection[:, 0],
                          "y": projection[:, 1]})
    metrics = pd.DataFrame({key: np.concatenate([s[key] for s in scores]) for key in scores[0]})
    return pd.concat([table, metrics], axis=1), projection


def predict(model: torch.nn.Module, dataset, ids: Sequence[int], batch_size: int = 64
            ) -> dict[str, torch.Tensor]:
    """The model's activated predictions on `ids`: {task: (N, ...) CPU tensor}, rows in id order."""
    if not len(ids):
        raise ValueError("predict needs at least one instance id")
    parts = [outputs for _, _, outputs in _forward(model, dataset, ids, batch_size)]
    return {name: torch.cat([p[name] for p in parts]) for name in parts[0]}


def pooled_features(model: torch.nn.Module, dataset, ids: Sequence[int], batch_size: int = 64) -> np.ndarray:
    """(N, D) float64: every encoder feature map of each image averaged over its pixels and
    concatenated (what the instance map projects). ValueError for a model without features."""
    rows = []
    for _, pooled, _ in _forward(model, dataset, ids, batch_size):
        if pooled is None:
            raise ValueError(f"{type(model).__name__} provides no encoder features (ProvidesFeatures), "
                             "so it has no instance map")
        rows.append(pooled.double().numpy())
    return np.concatenate(rows)


MAP_COLUMNS = ["model", "id", "group", "x", "y"]


def twin_map(models: Mapping[str, torch.nn.Module], dataset, groups: Mapping[str, Sequence[int]],
             unseen: tuple[object, Sequence[int]] | None = None, batch_size: int = 64) -> pd.DataFrame:
    """Every model's instances on one 2-D map: the PCA of the first model's pooled features (the
    original) fixes the axes, and every model's features are projected on them, so a point moves
    between models only where that model's features of the image moved.

    Args:
        models: {name: model}, the reference first (e.g. original, unlearned, oracle).
        dataset: the training set holding the ids of `groups`.
        groups: {group: ids} of `dataset`, e.g. {"forget": ..., "retain": a sample}.
        unseen: (dataset, ids) of held-out images, the "unseen" group (e.g. the test part).
    Returns:
        `MAP_COLUMNS`: one row per model and image, models in order, then groups in order.
    """
    parts = [(group, dataset, list(ids)) for group, ids in groups.items() if len(ids)]
    if unseen is not None and len(unseen[1]):
        parts.append(("unseen", unseen[0], list(unseen[1])))
    if not parts:
        raise ValueError("twin_map needs at least one image in a group")
    frames, axes = [], None
    for name, model in models.items():
        features = np.concatenate([pooled_features(model, source, ids, batch_size)
                                   for _, source, ids in parts])
        axes = axes or pca_axes(features)  # the first model's
        xy = project(features, *axes)
        labels = [(group, i) for group, _, ids in parts for i in ids]
        frames.append(pd.DataFrame({"model": name, "id": [i for _, i in labels],
                                    "group": [g for g, _ in labels], "x": xy[:, 0], "y": xy[:, 1]}))
    return pd.concat(frames, ignore_index=True)[MAP_COLUMNS]


def retain_damage(before: torch.nn.Module, after: torch.nn.Module, dataset, ids: Sequence[int],
                  batch_size: int = 64) -> pd.DataFrame:
    """Measured per-instance damage of unlearning on (retain) images: each task's primary
    per-image metric (higher is better) before and after, their change (after - before), and
    "worst change" (the lowest over the tasks); the most damaged first."""
    if not len(ids):
        raise ValueError("retain_damage needs at least one instance id")
    columns: dict[str, np.ndarray] = {"id": np.asarray(ids, dtype=np.int64)}
    for label, model in (("before", before), ("after", after)):
        scores: dict[str, list[np.ndarray]] = {}
        for batch, _, outputs in _forward(model, dataset, ids, batch_size):
            for name, spec in dataset.tasks.items():
                metric = spec.per_image_metrics(outputs[name], batch[name])[spec.primary]
                scores.setdefault(f"{name}:{spec.primary}", []).append(metric.double().numpy())
        for key, parts in scores.items():
            columns[f"{key} {label}"] = np.concatenate(parts)
    table = pd.DataFrame(columns)
    keys = [c[:-len(" before")] for c in table.columns if c.endswith(" before")]
    for key in keys:
        table[f"{key} change"] = table[f"{key} after"] - table[f"{key} before"]
    table["worst change"] = table[[f"{key} change" for key in keys]].min(axis=1)
    return table.sort_values("worst change", kind="stable", na_position="last").reset_index(drop=True)


def distance_to_unseen(frame: pd.DataFrame) -> pd.DataFrame:
    """Per model and group of a `twin_map` frame, the mean distance of its points to the centroid
    of that model's unseen points on the map (NaN without unseen points): unlearning should
    bring the forget set closer while the retain set stays where it was."""
    rows = []
    for model, points in frame.groupby("model", sort=False):
        unseen = points[points["group"] == "unseen"][["x", "y"]]
        centre = unseen.mean().to_numpy() if len(unseen) else np.full(2, np.nan)
        for group, members in points.groupby("group", sort=False):
            distance = np.linalg.norm(members[["x", "y"]].to_numpy() - centre, axis=1).mean()
            rows.append({"model": model, "group": group, "distance to unseen": float(distance)})
    return pd.DataFrame(rows, columns=["model", "group", "distance to unseen"])
