import math

import pytest

from core.evaluation import compare_models
from core.evaluation.compare import LEADERBOARD_COLUMNS, Comparison
from core.requests import ForgetRequest


@pytest.mark.parametrize("tasks", [None, ["depth"]])
def test_compare_models(tiny_model, indoor_data, tasks):
    request = ForgetRequest.build([0, 1], tasks, indoor_data.train.ids, list(tiny_model.tasks))
    comparison = compare_models({"original": tiny_model, "same": tiny_model}, request, indoor_data,
                                {"same": 1.5}, retain_sample=6)
    board = comparison.leaderboard.set_index("model")
    assert list(comparison.leaderboard.columns) == LEADERBOARD_COLUMNS
    # an unchanged model scores exactly what doing nothing scores
    assert board.loc["same", "uis"] == pytest.approx(board.loc["original", "uis"])
    assert board.loc["same", "seconds"] == 1.5
    # no change on the retain sample: ILI is 0, or NaN only where a reference metric is 0
    scores = comparison.scores
    reference = scores[(scores["model"] == "original") & (scores["split"] == "retain") & scores["primary"]]
    ili = board.loc["same", "ili"]
    assert ili == 0 or (math.isnan(ili) and (reference["value"] == 0).any()), (ili, reference)
    assert math.isnan(board.loc["original", "seconds"])
    if tasks is None:  # no other task to interfere with
        assert math.isnan(board.loc["same", "tli"])
    assert 0 <= board.loc["same", "mia_auc"] <= 1
    assert set(comparison.breakdown["model"]) == {"original", "same"}
    assert comparison.scores["primary"].sum() == comparison.scores.groupby(
        ["model", "split", "task"]).ngroups
    back = Comparison.from_dict(comparison.to_dict())
    assert back.leaderboard["uis"].tolist() == pytest.approx(comparison.leaderboard["uis"].tolist())


def test_reference_is_required(tiny_model, indoor_data):
    request = ForgetRequest.build([0], None, indoor_data.train.ids, list(tiny_model.tasks))
    with pytest.raises(ValueError, match="reference 'original'"):
        compare_models({"m": tiny_model}, request, indoor_data)
