"""Tuning: seeded TPE over each method's space, scored on the tuning part of val, edges widen."""

import json

import pandas as pd
import pytest

from core.data import split_val
from core.evaluation import tuning
from core.evaluation.tuning import (
    mode_requests,
    tune,
    tuned_config,
    tuned_settings,
    tuning_table,
    widen_trials,
)
from core.unlearning import get_unlearner
from core.unlearning.base import DivergenceError
from core.unlearning.grad_ascent import GradAscent
from core.unlearning.search import LR, Range
from core.unlearning.ssd import SSD

FEW_STEPS = {"lr": LR, "steps": Range(1, 3, integer=True)}
"""A search space of a few steps, so that the tests' runs are short."""


@pytest.fixture()
def trained(use_cache):
    """(model, data): a tiny street model trained 30 epochs, so its metrics (and UIS) are not 0;
    30 val images, so the tuning part holds 3."""
    import torch

    from core.data.sources import DataSource
    from core.models import build_model
    from core.training import TrainConfig, train
    from core.unlearning import UnlearningData

    source = DataSource(benchmark="synthetic-street", n_train=12, n_val=30, size=(32, 32))
    val = source.open("val")
    data = UnlearningData(train=source.open("train"), val=val,
                          calibration_ids=split_val(val.ids)["calibration"])
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn", "args": {"width": 4}}, list(data.train.tasks.values()))
    train(model, data.train, TrainConfig(epochs=30, batch_size=4, device="cpu"))
    return model.eval(), data


def _requests(data, mode):
    ids = data.train.ids
    return mode_requests(ids[:2], ids, list(data.train.tasks), mode)


def test_mode_requests():
    full = mode_requests([1, 2], list(range(6)), ["a", "b"], "full")
    partial = mode_requests([1, 2], list(range(6)), ["a", "b"], "partial")
    assert [list(r.tasks) for r in full] == [["a", "b"]] and full[0].mode == "full"
    assert [list(r.tasks) for r in partial] == [["a"], ["b"]]
    assert all(list(r.instances) == [1, 2] for r in full + partial)


def test_tuning_is_seeded_and_scored_on_the_tuning_part(trained, val_reads, monkeypatch):
    monkeypatch.setattr(GradAscent, "search_space", FEW_STEPS)
    model, data = trained
    requests = _requests(data, "partial")[:1]
    val_reads.clear()
    first = tune("grad_ascent", model, requests, data, trials=3, seed=0)
    tuning_ids = set(split_val(data.held_out("test")[0].ids)["tuning"])
    assert val_reads and set(val_reads) <= tuning_ids
    assert first["failed"] == 0
    again = tune("grad_ascent", model, requests, data, trials=3, seed=0)
    assert [t["params"] for t in first["trials"]] == [t["params"] for t in again["trials"]]
    assert [t["uis"] for t in first["trials"]] == [t["uis"] for t in again["trials"]]
    assert first["budget"] == 3 and len(first["trials"]) == 3 + first["extra_trials"]
    assert first["scored_on"] == "tuning" and first["mode"] == "partial"
    assert set(first["trials"][0]["params"]) == {"lr", "steps"}
    best = min((t for t in first["trials"] if t["uis"] is not None), key=lambda t: t["uis"])
    assert first["chosen"] == best["params"] and first["best_uis"] == best["uis"]
    other = tune("grad_ascent", model, requests, data, trials=3, seed=1)
    assert [t["params"] for t in other["trials"]] != [t["params"] for t in first["trials"]]


def test_a_choice_on_the_edge_widens_the_range_and_searches_again(monkeypatch):
    monkeypatch.setattr(GradAscent, "search_space", {"steps": Range(5, 6, integer=True)})
    monkeypatch.setattr(tuning, "score_config", lambda method, config, *args: (float(config["steps"]), 0.0))
    record = tune("grad_ascent", None, _FakeRequests.full, None, trials=3, seed=0)
    # 5 or 6 is always on an edge: 5 wins, the range grows to 4..6, then 3..6, then stops
    assert [r["space"]["steps"]["low"] for r in record["rounds"]] == [5, 4, 3]
    assert record["extra_trials"] == 2 * widen_trials(3) == len(record["trials"]) - 3
    assert record["widened"] == {"steps": [{"low": 5, "high": 6, "log": False, "integer": True},
                                           {"low": 3, "high": 6, "log": False, "integer": True}]}
    assert record["chosen"]["steps"] == min(t["params"]["steps"] for t in record["trials"])
    row = tuning_table([record]).iloc[0]
    assert row["widened"] == "steps 5..6 -> 3..6" and row["trials"] == 3 + record["extra_trials"]
    assert row["chosen"] == f"steps={record['chosen']['steps']}"


def test_a_diverging_trial_is_a_failed_trial_of_the_budget(monkeypatch):
    def score(method, config, *args):
        if config["lr"] > 1e-3:
            raise DivergenceError(get_unlearner("grad_ascent"), 2, "the forget loss is nan")
        return 1.0 + config["lr"], 0.0

    monkeypatch.setattr(tuning, "score_config", score)
    monkeypatch.setattr(GradAscent, "search_space", {"lr": Range(1e-4, 1e-2, log=True)})
    record = tune("grad_ascent", None, _FakeRequests.full, None, trials=6, seed=0)
    failed = [t for t in record["trials"] if t["uis"] is None]
    assert failed and record["failed"] == len(failed) and "diverged" in failed[0]["error"]
    assert record["chosen"]["lr"] <= 1e-3
    monkeypatch.setattr(tuning, "score_config", lambda *a: (float("nan"), 0.0))
    record = tune("grad_ascent", None, _FakeRequests.full, None, trials=2, seed=0)
    assert record["chosen"] == {} and record["best_uis"] is None and record["failed"] == 2
    assert tuning_table([record]).iloc[0]["chosen"] == "defaults (every trial failed)"


class _FakeRequests:
    class _Full:
        mode = "full"

    full = [_Full()]


def test_tune_checkpoint_writes_the_dashboard_settings(tmp_path, use_cache, monkeypatch):
    from core.cli import main

    monkeypatch.setattr(GradAscent, "search_space", FEW_STEPS)
    monkeypatch.setattr(SSD, "search_space", {**SSD.search_space, "steps": Range(1, 2, integer=True)})

    model = tmp_path / "tiny"
    assert main(["train", "--benchmark", "synthetic-street", "--n-train", "12", "--n-val", "30", "--size",
                 "32x32", "--arg", "width=4", "--epochs", "30", "--batch-size", "4", "--device", "cpu",
                 "--out", str(model)]) == 0
    out = tmp_path / "elsewhere.json"
    out.write_text(json.dumps({"another-model": {"modes": {}}}))
    args = ["tune", "--model", str(model), "--trials", "2", "--methods", "grad_ascent,ssd", "--ratio", "0.2",
            "--out", str(out)]
    assert main(args) == 0
    document = json.loads(out.read_text())
    assert set(document) == {"another-model", "tiny"}
    entry = document["tiny"]
    assert entry["trials"] == 2 and entry["command"] == "mtu " + " ".join(args)
    assert len(entry["instances"]) == 2
    assert "tuning part" in entry["scored_on"] and entry["seconds"] > 0
    assert all(uis is not None for mode in entry["best_uis"].values() for uis in mode.values())
    assert set(entry["modes"]) == {"full", "partial"}
    assert set(entry["modes"]["full"]["grad_ascent"]) == {"lr", "steps"}
    assert set(entry["modes"]["partial"]["ssd"]) == {"steps", "alpha", "dampening"}
    # read back from the tuned.json beside the checkpoint
    assert tuned_settings(model) is None
    out.replace(tmp_path / "tuned.json")
    assert tuned_config(tuned_settings(model), "partial", "ssd") == entry["modes"]["partial"]["ssd"]
    assert tuned_config(tuned_settings(model), "full", "salun") is None
    assert tuned_config(None, "full", "ssd") is None


def test_bench_results_go_outside_the_work_tree(monkeypatch, tmp_path):
    from pathlib import Path

    from core.cli import default_results_dir

    monkeypatch.delenv("MTU_RESULTS_DIR", raising=False)
    default = default_results_dir("bench")
    assert default.name == "bench" and not default.is_relative_to(Path.cwd())
    monkeypatch.setenv("MTU_RESULTS_DIR", str(tmp_path))
    assert default_results_dir("bench-quick") == tmp_path / "bench-quick"


def _bench_folder(folder):
    """A finished bench's layout: plan.json and one tuning record per (mode, method), pooled over
    the plan's ratios and settings."""
    (folder / "tuning").mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"fingerprint": {}, "plan": {
        "ratios": [0.01, 0.1], "trials": 16, "tuning_seed": 0, "n_train": 400, "size": [32, 32]}}))
    for mode in ("full", "partial"):
        for method, lr in (("ssd", 1e-3), ("salun", 2e-4)):
            record = {"benchmark": "synthetic-indoor", "mode": mode, "method": method,
                      "chosen": {"lr": lr, "steps": len(mode)}, "best_uis": 3.0}
            name = f"synthetic-indoor__{mode}__s0__{method}.json"
            (folder / "tuning" / name).write_text(json.dumps(record))
    return folder


def test_tuned_from_bench_writes_each_modes_choice(tmp_path):
    folder = _bench_folder(tmp_path / "bench")
    out = tmp_path / "models" / "tuned.json"
    out.parent.mkdir()
    out.write_text(json.dumps({"other": {"modes": {}}}))
    document = tuning.tuned_from_bench(folder, out, command="mtu tune --from-bench bench")
    written = json.loads(out.read_text())
    assert set(written) == {"other", "synthetic-indoor"} and document == written
    entry = written["synthetic-indoor"]
    assert entry["trials"] == 16 and entry["ratios"] == [0.01, 0.1]
    assert "400 training images at 32x32" in entry["source"] and "UIS v2" in entry["scored_on"]
    assert entry["modes"]["full"]["ssd"] == {"lr": 1e-3, "steps": 4}
    assert tuned_config(entry, "partial", "salun", ["segmentation"]) == {"lr": 2e-4, "steps": 7}
    assert tuned_config(entry, "full", "salun") == {"lr": 2e-4, "steps": 4}


def test_tuned_from_bench_names_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="no plan.json"):
        tuning.tuned_from_bench(tmp_path, tmp_path / "tuned.json")
    folder = _bench_folder(tmp_path / "bench")
    with pytest.raises(ValueError, match="no tuning studies of 'synthetic-street' .*it has synthetic-indoor"):
        tuning.tuned_from_bench(folder, tmp_path / "tuned.json", ["synthetic-street"])
    assert not (tmp_path / "tuned.json").exists()


def test_mtu_tune_from_bench(tmp_path, capsys):
    from core.cli import main

    folder = _bench_folder(tmp_path / "bench")
    out = tmp_path / "tuned.json"
    assert main(["tune", "--from-bench", str(folder), "--out", str(out)]) == 0
    assert "synthetic-indoor" in capsys.readouterr().out
    entry = json.loads(out.read_text())["synthetic-indoor"]
    assert entry["command"].startswith("mtu tune --from-bench")
    street = ["--benchmarks", "synthetic-street"]
    assert main(["tune", "--from-bench", str(folder), *street, "--out", str(out)]) != 0
    assert "no tuning studies of 'synthetic-street'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="--from-bench needs --out"):
        main(["tune", "--from-bench", str(folder)])


def test_tuning_effort_sums_each_methods_studies():
    rows = [("a", 4, 0, 0, "no", True, 1.2, True),
            ("a", 6, 2, 1, "lr 1e-05..0.01 -> 3e-07..0.01", False, 2.0, False),
            ("b", 4, 0, 0, "no", False, 0.4, float("nan"))]  # b's group has no floor
    table = pd.DataFrame([{"benchmark": "x", "mode": "full", "requests": 2, "method": m, "trials": t,
                           "extra_trials": e, "failed": f, "best_uis": 1.0, "still_improving": i,
                           "plateaued": p, "chosen": "", "widened": w, "seconds": s}
                          for m, t, e, f, w, i, s, p in rows])
    effort = tuning.tuning_effort(table).set_index("method")
    assert effort.loc["a"].tolist() == [2, 10, 2, 1, 1, 1, 1, 3]
    assert effort.loc["b"].tolist() == [1, 4, 0, 0, 0, 0, 0, 0]
    assert "### Effort per method" in tuning.tuning_markdown(table)


def test_each_study_has_its_own_sampler_seed(monkeypatch):
    seeds = {tuning.study_seed(0, b, mode, m) for b in ("synthetic-indoor", "synthetic-conflict-high")
             for mode in ("full", "partial") for m in tuning.tunable_methods()}
    assert len(seeds) == 2 * 2 * len(tuning.tunable_methods())
    assert tuning.study_seed(0, "a", "full", "gpm") == tuning.study_seed(0, "a", "full", "gpm")
    assert tuning.study_seed(1, "a", "full", "gpm") != tuning.study_seed(0, "a", "full", "gpm")
    # two studies of one method with different sampler seeds start from different configurations
    monkeypatch.setattr(GradAscent, "search_space", {"lr": Range(1e-4, 1e-2, log=True)})
    monkeypatch.setattr(tuning, "score_config", lambda method, config, *args: (config["lr"], 0.0))
    one, two = (tune("grad_ascent", None, _FakeRequests.full, None, trials=4, seed=0, sampler_seed=s)
                for s in (tuning.study_seed(0, "a", "full", "grad_ascent"),
                          tuning.study_seed(0, "b", "full", "grad_ascent")))
    assert one["sampler_seed"] != two["sampler_seed"] and one["seed"] == two["seed"] == 0
    assert [t["params"] for t in one["trials"][:2]] != [t["params"] for t in two["trials"][:2]]


def test_a_pooled_study_scores_every_request_against_its_oracle(monkeypatch):
    calls = []

    class Board:
        def __init__(self, models):
            scores = [0.0, float(len(calls)), 0.0][:len(models)]  # the method's: 1, 2, 3
            self.leaderboard = pd.DataFrame({"model": list(models), "uis2": scores})

    def compare(models, request, *args, **kwargs):
        calls.append((request, dict(models)))
        return Board(models)

    monkeypatch.setattr(tuning, "run_here",
                        lambda model, request, data: lambda method, config: ("unlearned", 0.5))
    monkeypatch.setattr(tuning, "compare_models", compare)
    requests = [_FakeRequests._Full(), _FakeRequests._Full(), _FakeRequests._Full()]
    score, seconds = tuning.score_config("gpm", {}, "model", requests, None, oracles=["o1", "o2", "o3"])
    assert [c[0] for c in calls] == requests and seconds == 1.5
    assert [c[1]["retrain"] for c in calls] == ["o1", "o2", "o3"]
    assert score == pytest.approx((1 + 2 + 3) / 3)  # the mean of the requests' UIS v2
    monkeypatch.setattr(tuning, "score_config", lambda method, config, model, reqs, *a: (len(reqs), 0.0))
    monkeypatch.setattr(GradAscent, "search_space", {"lr": Range(1e-4, 1e-2, log=True)})
    record = tune("grad_ascent", None, requests, None, trials=2, oracles=["o1", "o2", "o3"])
    assert record["requests"] == 3 and record["best_uis"] == 3 and "retrain oracle" in record["score"]
    with pytest.raises(ValueError, match="2 oracles for 3 requests"):
        tune("grad_ascent", None, requests, None, trials=2, oracles=["o1", "o2"])


def test_best_so_far_and_still_improving():
    def record(scores):
        return {"trials": [{"uis": s} for s in scores]}

    assert tuning.best_so_far(record([None, 5.0, 6.0, 4.0])) == [None, 5.0, 5.0, 4.0]
    flat = record([5.0, 3.0, 4.0, 6.0, 3.5, 4.0, 7.0, 5.0])  # best at trial 2 of 8
    assert not tuning.still_improving(flat)
    late = record([5.0, 4.0, 4.5, 6.0, 3.9, 4.0, 7.0, 3.0])  # the last trial set the best
    assert tuning.still_improving(late)
    assert not tuning.still_improving(record([None, None]))
    row = tuning_table([{**late, "method": "m", "mode": "full", "extra_trials": 0, "failed": 0,
                         "best_uis": 3.0, "chosen": {}, "widened": {}, "seconds": 1.0}]).iloc[0]
    assert row["still_improving"]


def test_the_top_configurations_are_rescored_on_more_draws_and_the_best_mean_chosen(monkeypatch):
    """Protocol 5 (benchmarks/DECISIONS.md section 14): the search reads one draw; its best
    `top` configurations are scored again on every further draw (each with its own requests and
    oracles), and the chosen one has the lowest mean over all draws, not the luckiest first
    score."""
    draw0, draw1, draw2 = ([_FakeRequests._Full()] for _ in range(3))

    def score(method, config, model, requests, data, retain_sample, seed, oracles):
        lr = config["lr"]
        if requests is draw0:  # the search's draw: lower lr looks better
            return lr * 1000, 0.0
        assert oracles == (["o1"] if requests is draw1 else ["o2"])
        return (1 - lr * 100) * 10, 0.0  # the other draws: higher lr is better

    monkeypatch.setattr(tuning, "score_config", score)
    monkeypatch.setattr(GradAscent, "search_space", {"lr": Range(1e-4, 1e-2, log=True)})
    record = tune("grad_ascent", None, draw0, None, trials=8, seed=0, oracles=["o0"],
                  rescore=[(draw1, ["o1"]), (draw2, ["o2"])], top=3)
    done = sorted((t for t in record["trials"] if t["uis"] is not None), key=lambda t: t["uis"])
    top = done[:3]
    assert [r["number"] for r in record["rescored"]] == [t["number"] for t in top]
    for entry, trial in zip(record["rescored"], top):
        lr = trial["params"]["lr"]
        assert entry["scores"] == pytest.approx([lr * 1000, (1 - lr * 100) * 10, (1 - lr * 100) * 10])
        assert entry["mean"] == pytest.approx(sum(entry["scores"]) / 3)
    best = min(record["rescored"], key=lambda r: r["mean"])
    assert record["chosen"] == best["params"] and record["best_uis"] == pytest.approx(best["mean"])
    assert record["chosen"] != done[0]["params"]  # the first draw's best is not the chosen one
    assert record["draws"] == 3 and record["best_trial_uis"] == done[0]["uis"]
    assert record["best_so_far"] == tuning.best_so_far(record)  # the curve is the search's draw
    # rescoring at an earlier budget reads only the trials up to it
    early = tune("grad_ascent", None, draw0, None, trials=8, seed=0, oracles=["o0"],
                 rescore=[(draw1, ["o1"]), (draw2, ["o2"])], top=2, rescore_at=[4])
    at_4 = early["rescored_at"]["4"]
    assert at_4["rescored"] and all(r["number"] < 4 for r in at_4["rescored"])
    assert at_4["chosen_number"] in [r["number"] for r in at_4["rescored"]]
    with pytest.raises(ValueError, match="1 oracles for 2 requests"):
        tune("grad_ascent", None, draw0, None, trials=2, oracles=["o0"], rescore=[(draw1 * 2, ["o1"])])


def test_a_study_has_plateaued_when_its_last_quarter_gained_less_than_the_floor():
    def record(scores):
        return {"trials": [{"uis": s} for s in scores]}

    # 8 trials: the last quarter is trials 7-8; best before it 4.0, at the end 3.5
    curve = record([6.0, 5.0, 4.5, 4.0, 4.2, 4.1, 3.5, 4.4])
    assert tuning.plateaued(curve, floor=1.0)  # gained 0.5 < 1.0
    assert not tuning.plateaued(curve, floor=0.4)  # gained 0.5 >= 0.4
    assert not tuning.plateaued(record([None, None]), floor=1.0)
    assert not tuning.plateaued(record([3.0, None]), floor=1.0)  # too few trials to tell
    row = tuning_table([{**curve, "method": "m", "mode": "full", "extra_trials": 0, "failed": 0,
                         "best_uis": 3.5, "chosen": {}, "widened": {}, "seconds": 1.0,
                         "benchmark": "b"}], floors={("b", "full"): 1.0}).iloc[0]
    assert row["plateaued"] and row["floor"] == 1.0
    assert pd.isna(tuning_table([{**curve, "method": "m", "mode": "full", "extra_trials": 0,
                                  "failed": 0, "best_uis": 3.5, "chosen": {}, "widened": {},
                                  "seconds": 1.0}]).iloc[0]["plateaued"])


def test_a_trial_runs_each_request_through_the_one_run_path(trained, monkeypatch):
    """Issue 19 part 5: "run and record" has one path, `run_request` (the bench's cells, the CLI,
    the worker); a tuning trial's runs take it too (nothing recorded, nothing written)."""
    import core.evaluation.compare as compare

    model, data = trained
    calls = []
    real = compare.run_request

    def spy(*args, **kwargs):
        calls.append((kwargs["ledger"], kwargs["out"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(compare, "run_request", spy)
    requests = _requests(data, "partial")
    tuning.score_config("grad_ascent", {"steps": 1}, model, requests, data)
    assert calls == [(None, None)] * len(requests)
