"""The forget-gap noise floor on a hand-made classification set."""

import pytest
import torch

from core.evaluation.reference import forget_gap_noise_floor
from core.tasks import TaskSpec
from core.unlearning import UnlearningData


class _Set:
    """Images hold the class the model will predict; labels the true class."""

    tasks = {"kind": TaskSpec("kind", "classification", 3)}

    def __init__(self, predicted: dict[int, int], labels: dict[int, int]):
        self.ids, self.predicted, self.labels = sorted(predicted), predicted, labels

    def batch(self, ids):
        ids = list(ids)
        image = torch.tensor([float(self.predicted[i]) for i in ids]).view(-1, 1, 1, 1).expand(-1, 3, 2, 2)
        return {"id": torch.tensor(ids), "image": image.contiguous(),
                "kind": torch.tensor([self.labels[i] for i in ids])}


class _Echo(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, image):
        return {"kind": 10 * torch.nn.functional.one_hot(image[:, 0, 0, 0].long(), 3).float()}


@pytest.fixture()
def half_right():
    """val ids 0..9: calibration [0], tuning [5], test [1-4, 6-9]; right on 1-4, wrong on 6-9."""
    predicted = {i: 1 for i in range(10)}
    labels = {i: 1 if i < 5 else 2 for i in range(10)}
    train = _Set({100: 0, 101: 0}, {100: 0, 101: 0})
    return UnlearningData(train=train, val=_Set(predicted, labels), calibration_ids=[0])


def test_noise_floor_by_hand(half_right):
    model = _Echo()
    # test accuracy 0.5; one instance scores 1 or 0: gap |0.5 - 1| / 0.5 = |0.5 - 0| / 0.5 = 100%
    one = forget_gap_noise_floor(model, half_right, 1, draws=20, seed=3).set_index("task")
    assert one.loc["kind", ["mean", "low", "high"]].tolist() == pytest.approx([100.0] * 3)
    assert one.loc["all", "mean"] == pytest.approx(100.0)
    assert one.loc["kind", ["size", "pool", "draws"]].tolist() == [1, 8, 20]
    # the whole test part is the reference itself: gap 0
    every = forget_gap_noise_floor(model, half_right, 8, draws=5).set_index("task")
    assert every.loc["kind", ["mean", "low", "high"]].tolist() == pytest.approx([0.0] * 3)
    # two instances: both right or both wrong (100%), or one of each (0%)
    two = forget_gap_noise_floor(model, half_right, 2, draws=400, seed=0).set_index("task")
    # P(mixed) = 16 / 28
    assert two.loc["kind", "mean"] == pytest.approx(100 * 12 / 28, abs=8)
    assert two.loc["kind", ["low", "high"]].tolist() == [0.0, 100.0]


def test_noise_floor_checks_its_input(half_right):
    with pytest.raises(ValueError, match="size 9 must be between 1 and the 8 instances of the test part"):
        forget_gap_noise_floor(_Echo(), half_right, 9)
    with pytest.raises(ValueError, match="unknown tasks \\['depth'\\]; accepted: kind"):
        forget_gap_noise_floor(_Echo(), half_right, 1, tasks=["depth"])
    tuning = forget_gap_noise_floor(_Echo(), half_right, 1, draws=3, heldout="tuning")
    assert tuning["pool"].tolist() == [1, 1]
