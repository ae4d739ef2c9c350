"""The kind registry: duplicates refused, unknown kinds listed, and a user's own kind (one
file-worth of class, here) working end to end: spec, loss under vmap, metrics, loader, unlearning."""

import json

import numpy as np
import pytest
import torch

from core.data import MTLDataset
from core.tasks import (
    DuplicateTaskKind,
    TaskKind,
    TaskSpec,
    UnknownTaskKind,
    base,
    get_kind,
    list_kinds,
    register_kind,
)
from core.tasks.base import PixelMeanKind, per_pixel_array
from core.unlearning.random_label import random_targets
from core.visual import binary_rgb, render_task


@pytest.fixture
def registry(monkeypatch):
    """A copy of the registry that the test may extend; the real one is restored afterwards."""
    monkeypatch.setattr(base, "_KINDS", dict(base._KINDS))


class Heatmap(PixelMeanKind):
    """A user's kind: a per-pixel heat value in [0, 1], -1 = ignore; squared error."""

    name = "heatmap"
    loss_name = "squared_error"
    metrics = ("mse", "hit")
    primary = "hit"
    lower_is_better = frozenset({"mse"})
    channels = 1
    folder = "heat"

    def valid_mask(self, spec, target):
        return target[:, 0] >= 0

    def pixel_loss(self, spec, pred, target):
        return (pred - target)[:, 0] ** 2

    def pixel_values(self, spec, pred, target):
        err = (pred - target)[:, 0]
        return {"mse": err**2, "hit": (err.abs() < 0.1).to(pred.dtype)}

    def load(self, spec, array, size):
        return torch.from_numpy(np.ascontiguousarray(per_pixel_array(array, size, 1), np.float32))

    def render(self, spec, values, reference):
        return binary_rgb(values[0], (0, 0, 0), (255, 0, 0))

    def explanation_score(self, spec, pred, target_class):
        return pred[:, 0]

    def constant_statistic(self, spec, target):
        return target[:, 0][spec.valid_mask(target)]

    def constant(self, spec, statistics):
        return torch.cat(list(statistics)).mean().reshape(1)


def test_a_duplicate_name_is_refused(registry):
    class AnotherDepth(Heatmap):
        name = "depth"

    before = dict(base._KINDS)
    with pytest.raises(DuplicateTaskKind, match="'depth' is already registered.*Depth"):
        register_kind(AnotherDepth)
    assert base._KINDS == before
    register_kind(Heatmap)
    with pytest.raises(DuplicateTaskKind, match="'heatmap'"):
        register_kind(Heatmap)


def test_bad_kinds_are_refused_with_the_reason(registry):
    class NoPrimary(Heatmap):
        name = "no_primary"
        primary = "accuracy"

    class Incomplete(TaskKind):
        name = "incomplete"

    with pytest.raises(TypeError, match="primary 'accuracy'.*mse, hit"):
        register_kind(NoPrimary)
    with pytest.raises(TypeError, match="lacks the class attributes loss_name, metrics, primary"):
        register_kind(Incomplete)
    with pytest.raises(TypeError, match="TaskKind subclass"):
        register_kind(object)


def test_unknown_kind_lists_the_registered_ones():
    with pytest.raises(UnknownTaskKind, match="'heatmap'; expected one of segmentation, parts, "
                                              "saliency, edges, depth, normal, classification"):
        get_kind("heatmap")


def test_a_user_kind_works_end_to_end(registry, tmp_path):
    register_kind(Heatmap)
    assert list_kinds()[-1] == "heatmap"
    spec = TaskSpec("heat", "heatmap", 1)
    assert TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert spec.per_pixel and not spec.has_classes
    with pytest.raises(ValueError, match="channels == 1, got channels=2"):
        TaskSpec("heat", "heatmap", 2)

    target = torch.tensor([[[[0.5, 1.0], [-1.0, 0.0]]]])
    pred = torch.tensor([[[[0.55, 0.5], [0.3, 0.0]]]])
    assert spec.per_sample_loss(pred, target).item() == pytest.approx((0.05**2 + 0.25) / 3)
    per_image = spec.per_image_metrics(pred, target)
    assert per_image["hit"].item() == pytest.approx(2 / 3)
    acc = spec.accumulator()
    acc.update(pred, target)
    assert acc.compute() == {"mse": pytest.approx((0.05**2 + 0.25) / 3), "hit": pytest.approx(2 / 3)}
    grads = torch.func.vmap(torch.func.grad(
        lambda p, t: spec.per_sample_loss(p[None], t[None])[0]))(pred, target)
    torch.testing.assert_close(grads, torch.tensor([[[[0.1 / 3, -1 / 3], [0.0, 0.0]]]]))
    assert render_task(spec, pred[0]).shape == (2, 2, 3)

    # On disk: its own folder, named in meta.json; read, stacked and relabelled like the rest.
    for split in ("train", "val"):
        for folder in ("image", "heat"):
            (tmp_path / split / folder).mkdir(parents=True)
        for i in range(2):
            np.save(tmp_path / split / "image" / f"{i}.npy", np.zeros((2, 2, 3), np.float32))
            np.save(tmp_path / split / "heat" / f"{i}.npy", np.full((2, 2), 0.25 * (i + 1)))
    (tmp_path / "meta.json").write_text(json.dumps(
        {"tasks": {"heat": {"folder": "heat", "kind": "heatmap", "channels": 1}}}))
    ds = MTLDataset(tmp_path, "train")
    batch = ds.batch([0, 1])
    assert ds.tasks == {"heat": spec} and batch["heat"].shape == (2, 1, 2, 2)
    assert spec.task_kind.constant(spec, [spec.task_kind.constant_statistic(spec, batch["heat"])]
                                   ).tolist() == [pytest.approx(0.375)]
    relabelled = random_targets(batch, {"heat": spec}, {"heat": batch["heat"].flip(0)})
    assert torch.equal(relabelled["heat"], batch["heat"].flip(0))
