import math

import pandas as pd
import pytest
import torch

from core.evaluation import (
    evaluate_request,
    fixed_retain_sample,
    ili,
    instance_interference,
    oracle_gap,
    task_interference,
    tli,
    uis,
    uis2,
    uis2_breakdown,
    uis2_terms,
    uis_breakdown,
    uis_terms,
)
from core.evaluation.uis import oracle_terms, uis_oracle
from core.requests import ForgetRequest
from core.tasks import TaskSpec

TASKS = {"seg": TaskSpec("seg", "segmentation", 3), "depth": TaskSpec("depth", "depth", 1)}
ORIG = {"test": {"seg": 0.5, "depth": 0.8}, "forget": {"seg": 0.9, "depth": 0.95},
        "kept": {"seg": 0.9, "depth": 0.95}, "retain": {"seg": 0.9, "depth": 1.0}}
UNL = {"test": {"seg": 0.4, "depth": 0.8}, "forget": {"seg": 0.55, "depth": 0.9},
       "kept": {"seg": 0.9, "depth": 0.76}, "retain": {"seg": 0.81, "depth": 0.9}}


def _frame() -> pd.DataFrame:
    rows = [(model, split, task, metric, value + (0.01 if metric != TASKS[task].primary else 0))
            for model, scores in (("original", ORIG), ("unl", UNL))
            for split, values in scores.items() for task, value in values.items()
            for metric in TASKS[task].metrics]
    return pd.DataFrame(rows, columns=["model", "split", "task", "metric", "value"])


def _request(tasks):
    return ForgetRequest.build([0, 1], tasks, list(range(10)), list(TASKS))


def test_uis_terms_by_hand():
    terms = uis_terms(ORIG, UNL, ["seg"], ["depth"]).set_index("task")
    # seg (target): d = |0.5-0.4|/0.5 = 0.2, f = |0.5-0.55|/0.5 = 0.1 -> 0.15
    # depth (kept): d = 0, k = |0.95-0.76|/0.95 = 0.2 -> 0.1
    assert terms.loc["seg", "role"] == "target" and terms.loc["depth", "role"] == "kept"
    assert terms.loc["seg", "uis_t"] == pytest.approx(0.15)
    assert terms.loc["depth", "uis_t"] == pytest.approx(0.1)
    assert math.isnan(terms.loc["seg", "kept_drift"]) and math.isnan(terms.loc["depth", "forget_gap"])
    halves = terms[["test_half", "forget_half", "kept_half"]].sum(axis=1)
    assert halves.to_numpy() == pytest.approx(terms["uis_t"].to_numpy())


def test_uis_from_frame_uses_primary_metric():
    frame = _frame()
    assert uis(frame, "unl", TASKS, _request(["seg"])) == pytest.approx(100 * (0.15 + 0.1) / 2)
    breakdown = uis_breakdown(frame, "unl", TASKS, _request(None))
    # full mode: depth is a target too, f = |0.8 - 0.9| / 0.8 = 0.125 -> uis_t = 0.0625
    assert list(breakdown["role"]) == ["target", "target"]
    assert breakdown.set_index("task").loc["depth", "uis_t"] == pytest.approx(0.0625)
    assert uis(frame, "original", TASKS, _request(None)) > 0  # the memorization gap


def test_ili_and_tli_by_hand():
    # ILI: seg 0.09/0.9 = 0.1, depth 0.1/1.0 = 0.1
    assert instance_interference(ORIG["retain"], UNL["retain"]) == pytest.approx(10.0)
    assert ili(_frame(), "unl", TASKS) == pytest.approx(10.0)
    # TLI (partial, forget seg): mean of k_depth = 0.2 and d_depth = 0 -> 10
    assert task_interference(ORIG, UNL, ["seg"], ["depth"]) == pytest.approx(10.0)
    assert tli(_frame(), "unl", TASKS, _request(["seg"])) == pytest.approx(10.0)
    assert math.isnan(tli(_frame(), "unl", TASKS, _request(None)))


def test_zero_reference_gives_nan():
    orig = {"test": {"seg": 0.0}, "forget": {"seg": 0.5}}
    assert math.isnan(uis_terms(orig, orig, ["seg"]).loc[0, "uis_t"])


def test_oracle_gap():
    frame = _frame()
    oracle = frame[frame["model"] == "original"].assign(model="retrain")
    gaps = oracle_gap(pd.concat([frame, oracle]), "unl").set_index(["split", "task", "metric"])
    assert gaps.loc[("test", "seg", "miou"), "gap"] == pytest.approx(0.1)
    assert list(gaps.columns) == ["unlearned", "oracle", "gap"]
    with pytest.raises(ValueError, match="no model 'retrain'"):
        oracle_gap(frame, "unl")


def test_fixed_retain_sample_is_deterministic():
    request = ForgetRequest.build([0], None, list(range(100)), ["a"])
    sample = fixed_retain_sample(request, 10, seed=3)
    assert sample == fixed_retain_sample(request, 10, seed=3) and len(set(sample)) == 10
    assert 0 not in sample
    assert fixed_retain_sample(request, 500) == list(range(1, 100))


@pytest.mark.parametrize("partial", [False, True])
def test_evaluate_request_frame(tiny_model, indoor_data, indoor_request, partial):
    data = indoor_data
    request = indoor_request(2, partial)
    torch.manual_seed(1)
    frame = evaluate_request({"original": tiny_model, "other": tiny_model}, request, data,
                             retain_sample=4)
    assert list(frame.columns) == ["model", "split", "task", "metric", "value"]
    splits = ["forget", "kept", "retain", "test"] if partial else ["forget", "retain", "test"]
    assert list(frame["split"].unique()) == splits
    assert set(frame[frame["split"] == "forget"]["task"]) == set(request.tasks)
    if partial:
        assert set(frame[frame["split"] == "kept"]["task"]) == set(request.kept_tasks)
    n_metrics = sum(len(spec.metrics) for spec in data.train.tasks.values())
    assert (frame[frame["split"] == "test"].groupby("model").size() == n_metrics).all()
    one = frame[frame["model"] == "original"].reset_index(drop=True)
    two = frame[frame["model"] == "other"].reset_index(drop=True)
    pd.testing.assert_series_equal(one["value"], two["value"])


def test_oracle_referenced_terms_by_hand():
    # the oracle as reference on every split; partial mode: seg is the target, depth kept
    oracle = {"test": {"seg": 0.5, "depth": 0.8}, "forget": {"seg": 0.5, "depth": 0.9},
              "kept": {"seg": 0.6, "depth": 0.95}}
    terms = oracle_terms(oracle, UNL, ["seg"], ["depth"]).set_index("task")
    # seg: test |0.5 - 0.4| / 0.5 = 0.2, forget |0.5 - 0.55| / 0.5 = 0.1 -> 0.15
    assert terms.loc["seg", ["test_drift", "forget_gap", "uis_t"]].tolist() == pytest.approx([0.2, 0.1, 0.15])
    # depth: test 0, kept |0.95 - 0.76| / 0.95 = 0.2 -> 0.1
    depth = terms.loc["depth", ["test_drift", "kept_drift", "uis_t"]].tolist()
    assert depth == pytest.approx([0.0, 0.2, 0.1])
    assert math.isnan(terms.loc["seg", "kept_drift"]) and math.isnan(terms.loc["depth", "forget_gap"])
    # the oracle against itself scores 0
    assert oracle_terms(oracle, oracle, ["seg"], ["depth"])["uis_t"].tolist() == [0.0, 0.0]


def test_uis_oracle_from_a_frame():
    rows = [(model, split, task, TASKS[task].primary, scores[split][task])
            for model, scores in (("retrain", ORIG), ("u", UNL)) for split in ("test", "forget", "kept")
            for task in TASKS]
    frame = pd.DataFrame(rows, columns=["model", "split", "task", "metric", "value"])
    request = ForgetRequest.build([0], ["seg"], [0, 1], ["seg", "depth"])
    expected = oracle_terms(ORIG, UNL, ["seg"], ["depth"])["uis_t"].mean() * 100
    assert uis_oracle(frame, "u", TASKS, request) == pytest.approx(expected)
    assert uis_oracle(frame, "retrain", TASKS, request) == 0.0


def test_uis2_terms_against_an_oracle_by_hand():
    # partial mode, seg forgotten, depth kept; the oracle is the reference on every split
    oracle = {"test": {"seg": 0.5, "depth": 0.8}, "forget": {"seg": 0.5, "depth": 0.9},
              "kept": {"seg": 0.6, "depth": 0.95}, "retain": {"seg": 0.9, "depth": 1.0}}
    terms = uis2_terms(oracle, UNL, ["seg"], ["depth"]).set_index("task")
    # seg: forget |0.5-0.55|/0.5 = 0.1, test |0.5-0.4|/0.5 = 0.2, retain |0.9-0.81|/0.9 = 0.1
    seg = terms.loc["seg", ["v2_forget", "v2_test", "v2_retain", "uis2_t"]].tolist()
    assert seg == pytest.approx([0.1, 0.2, 0.1, 0.4 / 3])
    # depth: kept |0.95-0.76|/0.95 = 0.2, test 0, retain |1-0.9|/1 = 0.1 -> 0.1
    depth = terms.loc["depth", ["v2_kept", "v2_test", "v2_retain", "uis2_t"]].tolist()
    assert depth == pytest.approx([0.2, 0.0, 0.1, 0.1])
    assert math.isnan(terms.loc["seg", "v2_kept"]) and math.isnan(terms.loc["depth", "v2_forget"])
    parts = terms[["forget_part", "kept_part", "test_part", "retain_part"]].sum(axis=1)
    assert parts.to_numpy() == pytest.approx(terms["uis2_t"].to_numpy())
    assert uis2_terms(oracle, oracle, ["seg"], ["depth"])["uis2_t"].tolist() == [0.0, 0.0]


def test_uis2_without_an_oracle_reads_the_unseen_level_for_forgetting():
    terms = uis2_terms(ORIG, UNL, ["seg", "depth"], oracle=False).set_index("task")
    # seg: forget |0.5 (original, test) - 0.55|/0.5 = 0.1, test 0.2, retain 0.1
    assert terms.loc["seg", "v2_forget"] == pytest.approx(0.1)
    # depth: forget |0.8 - 0.9|/0.8 = 0.125, test 0, retain 0.1 -> 0.075
    assert terms.loc["depth", "uis2_t"] == pytest.approx((0.125 + 0 + 0.1) / 3)


def test_uis2_leaves_a_zero_reference_out_of_its_task():
    reference = {split: dict(values) for split, values in ORIG.items()}
    reference["retain"]["seg"] = 0.0
    terms = uis2_terms(reference, UNL, ["seg"], ["depth"], oracle=False).set_index("task")
    assert math.isnan(terms.loc["seg", "v2_retain"])
    assert terms.loc["seg", "uis2_t"] == pytest.approx((0.1 + 0.2) / 2)  # the two finite terms
    assert terms.loc["seg", ["forget_part", "test_part", "retain_part"]].sum() == pytest.approx(0.15)


def test_uis2_from_a_frame_prefers_the_oracle():
    oracle = {split: {t: v + 0.05 for t, v in values.items()} for split, values in ORIG.items()}
    rows = [(model, split, task, TASKS[task].primary, scores[split][task])
            for model, scores in (("original", ORIG), ("retrain", oracle), ("u", UNL))
            for split in ("test", "forget", "kept", "retain") for task in TASKS]
    frame = pd.DataFrame(rows, columns=["model", "split", "task", "metric", "value"])
    request = ForgetRequest.build([0], ["seg"], [0, 1], ["seg", "depth"])
    expected = 100 * uis2_terms(oracle, UNL, ["seg"], ["depth"])["uis2_t"].mean()
    assert uis2(frame, "u", TASKS, request) == pytest.approx(expected)
    assert uis2(frame, "retrain", TASKS, request) == 0.0
    assert set(uis2_breakdown(frame, "u", TASKS, request)["reference"]) == {"retrain"}
    without = frame[frame["model"] != "retrain"]
    expected = 100 * uis2_terms(ORIG, UNL, ["seg"], ["depth"], oracle=False)["uis2_t"].mean()
    assert uis2(without, "u", TASKS, request) == pytest.approx(expected)
    assert set(uis2_breakdown(without, "u", TASKS, request)["reference"]) == {"original"}
