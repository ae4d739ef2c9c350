"""Per-class change (issue 21 part 4): IoU per class and the confusion change, per model and split."""

import math

import numpy as np
import pytest
import torch

from core.evaluation.metrics import evaluate_request
from core.evaluation.per_class import (
    class_confusions,
    class_iou,
    confusion_change,
    per_class_table,
    row_normalised,
)
from core.requests import ForgetRequest

COUNTS = np.array([[8, 2, 0],   # truth 0: 8 right, 2 taken for class 1
                   [1, 3, 0],   # truth 1
                   [0, 0, 0]])  # class 2: never present, never predicted


def test_iou_per_class_by_hand():
    iou = class_iou(COUNTS)
    assert iou[0] == pytest.approx(8 / (10 + 9 - 8)) and iou[1] == pytest.approx(3 / (4 + 5 - 3))
    assert math.isnan(iou[2])


def test_the_confusion_change_is_a_change_of_row_shares():
    after = np.array([[5, 5, 0], [0, 4, 0], [0, 0, 0]])
    assert row_normalised(COUNTS)[0].tolist() == [0.8, 0.2, 0.0] and row_normalised(COUNTS)[2].sum() == 0
    change = confusion_change({("original", "forget", "seg"): COUNTS, ("m", "forget", "seg"): after},
                              "forget", "seg", "m")
    assert change[0] == pytest.approx([-0.3, 0.3, 0.0]) and change[1] == pytest.approx([-0.25, 0.25, 0.0])
    assert np.allclose(change.sum(1), 0)
    with pytest.raises(KeyError, match="no confusion of oracle on forget / seg"):
        confusion_change({("m", "forget", "seg"): after}, "forget", "seg", "oracle", "m")


def test_per_class_tables_of_a_model_agree_with_its_split_metrics(tiny_model, indoor_data):
    ids = indoor_data.train.ids
    request = ForgetRequest.build(ids[:3], ["segmentation"], ids, list(tiny_model.tasks))
    models = {"original": tiny_model, "after": _perturbed(tiny_model)}
    confusions = class_confusions(models, request, indoor_data, retain_sample=4)
    # segmentation is the only confusion task; forget (target), kept has none, retain and test do
    splits = ("forget", "retain", "test")
    assert {(m, s) for m, s, _ in confusions} == {(m, s) for m in models for s in splits}
    assert {t for _, _, t in confusions} == {"segmentation"}
    table = per_class_table(confusions, {"segmentation": ("floor", "wall")})
    assert set(table["class"]) >= {"floor", "wall"}
    scores = evaluate_request(models, request, indoor_data, retain_sample=4)
    for (model, split, task), _ in confusions.items():
        rows = table[(table["model"] == model) & (table["split"] == split) & (table["task"] == task)]
        miou = scores[(scores["model"] == model) & (scores["split"] == split) & (scores["task"] == task)
                      & (scores["metric"] == "miou")]["value"].item()
        assert np.nanmean(rows["iou"]) == pytest.approx(miou)
    assert np.allclose(confusion_change(confusions, "test", "segmentation", "original"), 0)


def _perturbed(model):
    import copy

    twin = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in twin.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return twin
