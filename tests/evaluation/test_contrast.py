"""Issue 21 part 5: two ledger runs are contrasted only when their views read the same instances
(`core.evaluation.contrast.run_differences` names what differs)."""

from core.evaluation.contrast import run_differences

ROW = {"model_sha256": "a" * 64, "model_path": "/m/synthetic-street", "instances": [1, 2, 3],
       "tasks": ["segmentation", "depth"], "mode": "full", "data_root": None}


def test_runs_of_one_request_have_no_difference():
    assert run_differences(ROW, {**ROW, "instances": [3, 2, 1], "data_root": ""}) == []


def test_each_difference_is_named_with_both_values():
    other = {**ROW, "model_sha256": "b" * 64, "model_path": "/m/synthetic-indoor", "instances": [2, 3, 9],
             "tasks": ["depth"], "mode": "partial", "data_root": "/data/street"}
    found = run_differences(ROW, other)
    assert len(found) == 4
    model, instances, tasks, folder = found
    assert "synthetic-street" in model and "synthetic-indoor" in model and "a" * 12 in model
    assert "A forgets 3 (1, 2, 3)" in instances and "B forgets 3 (2, 3, 9)" in instances
    assert "2 in common" in instances
    assert "segmentation, depth (full-task)" in tasks and "depth (partial-task)" in tasks
    assert "/data/street" in folder and "the data its card names" in folder


def test_a_long_forget_set_is_shortened():
    (instances,) = run_differences(ROW, {**ROW, "instances": list(range(40))})
    assert "B forgets 40 (0, 1, 2, 3, 4, 5, ...)" in instances
