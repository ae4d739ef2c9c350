"""Looking at the training instances before picking what to forget: a per-instance table of
every task's metrics with a 2-D map of the shared features, and predictions for thumbnails
(typed ids are parsed by `core.requests.parse_ids`).

The model is read only: it runs in eval mode under `torch.no_grad` and is left as it was given.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import cast

import numpy as np
import pandas as pd
import torch

from core.models import ProvidesFeatures, has_features
from core.training import iterate_batches


def pca_2d(features: np.ndarray) -> np.ndarray:
    """The two leading principal components of each row: (N, D) -> (N, 2) float64.

    Centres the rows and projects them on the top two right singular vectors. Each axis is
    signed so that its largest-magnitude loading is positive, so equal input gives equal output.
    Columns beyond the rank of the centred data (e.g. N = 1) are 0.
    """
    centred = np.asarray(features, dtype=np.float64)
    centred = centred - centred.mean(0)
    _, sigma, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2][sigma[:2] > 1e-9 * sigma.max(initial=0.0)]  # drop axes of numerical noise
    signs = np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])
    projection = np.zeros((len(centred), 2))
    projection[:, :len(axes)] = centred @ (axes * signs[:, None]).T
    return projection


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
