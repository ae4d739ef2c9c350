import math

import pytest

from core.data import HeldOutError
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


def test_an_oracle_among_the_models_adds_its_references(tiny_model, indoor_data):
    request = ForgetRequest.build([0, 1], ["depth"], indoor_data.train.ids, list(tiny_model.tasks))
    models = {"original": tiny_model, "retrain": tiny_model, "same": tiny_model}
    comparison = compare_models(models, request, indoor_data, retain_sample=6)
    board = comparison.leaderboard.set_index("model")
    # every model equals the oracle here: no gap, UIS vs oracle 0 (or NaN for a 0 reference)
    assert (board["oracle_gap"] == 0).all()
    assert all(v == 0 or math.isnan(v) for v in board["uis_oracle"])
    # identical losses: the reference attack's score is 0 everywhere, AUC exactly 0.5
    assert board["mia_ref_auc"].tolist() == [0.5] * 3
    assert (board["mia_auc_low"] <= board["mia_auc"]).all()
    assert (board["mia_auc"] <= board["mia_auc_high"]).all()
    oracle = comparison.oracle
    assert set(oracle["split"]) == {"forget", "kept", "retain", "test"} and (oracle["gap"] == 0).all()
    assert set(oracle["model"]) == set(models)
    back = Comparison.from_dict(comparison.to_dict())
    assert back.oracle["gap"].tolist() == oracle["gap"].tolist()
    # without an oracle the columns are NaN and the frame is empty; an old record reads back
    plain = compare_models({"original": tiny_model}, request, indoor_data, retain_sample=6, mia=False)
    assert plain.leaderboard[["uis_oracle", "oracle_gap", "mia_ref_auc"]].isna().all().all()
    old = {k: v for k, v in plain.to_dict().items() if k != "oracle"}
    old["leaderboard"] = [{k: v for k, v in r.items() if k != "uis_oracle"} for r in old["leaderboard"]]
    assert list(Comparison.from_dict(old).leaderboard.columns) == LEADERBOARD_COLUMNS


def test_tuning_scores_on_the_tuning_part_only(tiny_model, indoor_data, val_reads):
    from core.data import split_val

    request = ForgetRequest.build([0, 1], None, indoor_data.train.ids, list(tiny_model.tasks))
    parts = split_val(indoor_data.held_out("test")[0].ids)
    compare_models({"original": tiny_model, "retrain": tiny_model}, request, indoor_data, retain_sample=6,
                   heldout="tuning", mia=False)
    assert set(val_reads) == set(parts["tuning"])
    val_reads.clear()
    compare_models({"original": tiny_model}, request, indoor_data, retain_sample=6, mia=False)
    assert set(val_reads) == set(parts["test"])
    with pytest.raises(HeldOutError, match="the test part cannot be read"):
        compare_models({"original": tiny_model}, request, indoor_data.for_method())


def test_compare_methods_runs_each_method_and_scores_it_beside_the_references(tiny_model, indoor_data):
    """"Run several methods on one request and compare" is one function, `compare_methods`: a
    benchmark cell runs the methods in this process; the Compare page gives it the results its
    worker saved through `run`. Both score exactly what `compare_models` scores on those models,
    the original (0 s) and the references first."""
    import pandas as pd

    from core.evaluation import compare_methods
    from core.unlearning import get_unlearner

    request = ForgetRequest.build([0, 1], ["depth"], indoor_data.train.ids, list(tiny_model.tasks))
    stand_in = get_unlearner("finetune", {"steps": 1, "device": "cpu"}).run(tiny_model, request, indoor_data)
    configs = {"grad_ascent": {"steps": 2, "seed": 3, "device": "cpu"}, "ssd": {"seed": 3, "device": "cpu"}}
    options = {"retain_sample": 4, "seed": 1, "mia": False}
    references = {"retrain": (stand_in.model, 5.0)}
    comparison = compare_methods(tiny_model, request, indoor_data, configs, references, **options)
    assert list(comparison.leaderboard["model"]) == ["original", "retrain", "grad_ascent", "ssd"]
    results = {m: get_unlearner(m, c).run(tiny_model, request, indoor_data) for m, c in configs.items()}
    expected = compare_models({"original": tiny_model, "retrain": stand_in.model,
                               **{m: r.model for m, r in results.items()}}, request, indoor_data,
                              {"original": 0.0, "retrain": 5.0}, **options)
    numbers = [c for c in comparison.leaderboard.columns if c != "seconds"]
    pd.testing.assert_frame_equal(comparison.leaderboard[numbers], expected.leaderboard[numbers])
    pd.testing.assert_frame_equal(comparison.breakdown, expected.breakdown)
    assert comparison.leaderboard["seconds"].tolist()[:2] == [0.0, 5.0]

    asked = []

    def saved(method, config):  # results made elsewhere (the dashboard's worker): read, not run
        asked.append((method, dict(config)))
        return results[method].model, 7.0

    again = compare_methods(tiny_model, request, indoor_data, configs, references, run=saved, **options)
    assert asked == [(m, c) for m, c in configs.items()]
    pd.testing.assert_frame_equal(again.leaderboard[numbers], expected.leaderboard[numbers])
    assert again.leaderboard["seconds"].tolist() == [0.0, 5.0, 7.0, 7.0]


def test_a_benchmark_cells_methods_run_through_run_request_unrecorded(tiny_model, indoor_data, monkeypatch,
                                                                      mtu_home):
    """A benchmark cell's methods (`compare_methods`' default runner) go through the one run path,
    `run_request`, with no ledger and no output: nothing is recorded or written, and no
    before/after rows are computed for them."""
    from core.evaluation import compare, compare_methods
    from core.unlearning import runner

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return runner.run_request(*args, **kwargs)

    monkeypatch.setattr(compare, "run_request", spy)
    request = ForgetRequest.build([0, 1], ["depth"], indoor_data.train.ids, list(tiny_model.tasks))
    before = sorted(mtu_home.rglob("*"))
    methods = {"grad_ascent": {"steps": 1, "device": "cpu"}}
    comparison = compare_methods(tiny_model, request, indoor_data, methods, retain_sample=4, mia=False)
    assert list(comparison.leaderboard["model"]) == ["original", "grad_ascent"]
    assert [(c["out"], c["ledger"], c["summarised"]) for c in calls] == [(None, None, False)]
    assert sorted(mtu_home.rglob("*")) == before
