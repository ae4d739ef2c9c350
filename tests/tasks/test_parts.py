"""The parts kind: segmentation of people's parts, ignored off people."""

import pytest
import torch
from task_helpers import PARTS, SEG, logits_for

from core.tasks import get_kind


def test_parts_score_and_train_like_segmentation():
    target = torch.tensor([[[0, 1, -1], [3, -1, -1]]])  # -1 off the person
    pred = logits_for(torch.tensor([[[0, 1, 2], [2, 0, 0]]]))
    ours, seg = PARTS.per_image_metrics(pred, target), SEG.per_image_metrics(pred, target)
    assert {m: v.tolist() for m, v in ours.items()} == {m: v.tolist() for m, v in seg.items()}
    assert ours["pixel_acc"].item() == pytest.approx(2 / 3)


def test_an_image_without_people_has_no_valid_pixel():
    target = torch.full((1, 2, 2), -1)
    acc = PARTS.accumulator()
    acc.update(torch.randn(1, 4, 2, 2), target)
    assert all(v != v for v in acc.compute().values())  # NaN
    assert PARTS.per_sample_loss(torch.randn(1, 4, 2, 2), target).item() == 0


def test_random_target_keeps_people_and_changes_every_part():
    target = torch.tensor([[[0, 1, -1], [3, -1, 2]]])
    out = PARTS.random_target(target, None, torch.Generator().manual_seed(0))
    assert torch.equal(out == -1, target == -1) and not (out[target >= 0] == target[target >= 0]).any()


def test_folder_needs_meta_for_its_classes():
    kind = get_kind("parts")
    (found,) = kind.discover(["image", "human_parts", "label"])
    assert (found.name, found.folder, found.channels) == ("parts", "human_parts", None)
    assert PARTS.render(torch.zeros(2, 2, dtype=torch.long).numpy()).shape == (2, 2, 3)
