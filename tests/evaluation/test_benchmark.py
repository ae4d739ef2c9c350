import json
import math

import pandas as pd
import pytest

from core.evaluation import benchmark
from core.evaluation.benchmark import (
    Bench,
    BenchError,
    BenchPlan,
    forget_instances,
    headline,
    plan_with,
    run_plan,
    settings_of,
    summary_table,
)

MINI = BenchPlan(benchmarks=("synthetic-indoor",), ratios=(0.1, 0.2), seeds=(1,),
                 methods=("grad_ascent", "interference_aware"), trials=2, n_train=12, n_val=10,
                 size=(32, 32), epochs=1, width=4, retain_sample=8, draws=1, partial_only=())


@pytest.fixture()
def few_steps(monkeypatch):
    """Search spaces of a few steps, so that tuning runs in the test are short (in this process:
    tune before handing the cells to workers)."""
    from core.unlearning.grad_ascent import GradAscent
    from core.unlearning.interference_aware import InterferenceAware
    from core.unlearning.search import LR, Range

    steps = {"lr": LR, "steps": Range(1, 3, integer=True)}
    monkeypatch.setattr(GradAscent, "search_space", steps)
    monkeypatch.setattr(InterferenceAware, "search_space", {
        **steps, "alpha": Range(0.05, 0.95),
        "backoff_partial": Range(0.1, 1.0, log=True, modes=("partial",))})


def test_plan_checks():
    with pytest.raises(BenchError, match="tuning seed 1"):
        BenchPlan(seeds=(1, 2), tuning_seed=1)
    with pytest.raises(BenchError, match="'nope'.*accepted"):
        BenchPlan(methods=("nope",))
    with pytest.raises(BenchError, match="'retrain'"):
        BenchPlan(methods=("retrain",))
    with pytest.raises(BenchError, match="ratio 1.5"):
        BenchPlan(ratios=(1.5,))
    with pytest.raises(BenchError, match="unknown plan fields"):
        plan_with(MINI, colour="red")
    assert plan_with(MINI, seeds=None).seeds == (1,)


def test_the_full_plan():
    plan = BenchPlan()
    assert len(plan.seeds) >= 5 and plan.tuning_seed not in plan.seeds
    assert plan.trials >= 16 and not hasattr(plan, "grid")  # one budget, the same for every method
    # a benchmark with strong measured task conflict, and one without (DECISIONS section 9)
    assert {"synthetic-conflict-high", "synthetic-indoor"} <= set(plan.benchmarks) and plan.floor >= 1
    assert "retrain" not in plan.all_methods()
    assert {"interference_aware_no_tgp", "interference_aware_no_igo", "interference_aware_fixed",
            "neggrad_plus_calibrated", "gpm_calibrated"} <= set(plan.all_methods())
    with pytest.raises(BenchError, match="trials must be at least 1"):
        BenchPlan(trials=0)


def test_the_plan_of_protocol_5():
    """benchmarks/DECISIONS.md section 14: more tuning draws for the top configurations, the
    sanity tier and two of indoor's partial settings left out, and the
    variants of ours run at ours' chosen configuration instead of studies of their own."""
    from core.evaluation.benchmark import SANITY_TIER
    from core.unlearning.ablations import VARIANTS

    plan = BenchPlan()
    assert plan.protocol == 5 and plan.draws == 3 and plan.rescore == 4
    methods = plan.all_methods()
    assert not set(SANITY_TIER) & set(methods)
    assert set(VARIANTS) <= set(methods) and "gpm_calibrated" in methods
    assert not set(plan.tuned_methods()) & set(VARIANTS) and "interference_aware" in plan.tuned_methods()
    assert plan.settings("synthetic-indoor", ["segmentation", "depth", "normal"]) == [
        "full", "partial:segmentation"]
    assert plan.settings("synthetic-conflict-high", ["a", "b"]) == ["full", "partial:a", "partial:b"]
    assert set(plan_with(plan, sanity=True).all_methods()) >= set(SANITY_TIER)
    with pytest.raises(BenchError, match="draws must be at least 1"):
        BenchPlan(draws=0)
    with pytest.raises(BenchError, match="'synthetic-indoor:colour'.*tasks"):
        BenchPlan(partial_only=("synthetic-indoor:colour",)).settings("synthetic-indoor", ["depth"])


def test_forget_draws_on_the_tuning_seed():
    ids = list(range(400))
    assert forget_instances(ids, 0.1, 0, draw=0) == forget_instances(ids, 0.1, 0)
    draws = [forget_instances(ids, 0.1, 0, draw=d) for d in range(3)]
    assert len({tuple(d) for d in draws}) == 3 and draws[1] == forget_instances(ids, 0.1, 0, draw=1)


def test_forget_instances_are_seeded_by_seed_and_ratio():
    ids = list(range(400))
    a = forget_instances(ids, 0.01, 1)
    assert a == forget_instances(ids, 0.01, 1) and len(a) == 4 and a == sorted(a)
    assert a != forget_instances(ids, 0.01, 2)
    assert len(forget_instances(ids, 0.1, 1)) == 40
    assert len(forget_instances(list(range(12)), 0.01, 1)) == 1
    assert settings_of(["a", "b"]) == ["full", "partial:a", "partial:b"]


def _board(rows):
    return pd.DataFrame(rows, columns=["benchmark", "mode", "seed", "model", "uis2", "mia_auc"])


def test_headline_against_the_strongest_baseline():
    rows = []
    for seed, (ours, a, b) in {1: (4.0, 10.0, 8.0), 2: (6.0, 10.0, 12.0)}.items():
        rows += [("x", "full", seed, "interference_aware", ours, 0.55), ("x", "full", seed, "a", a, 0.4),
                 ("x", "full", seed, "b", b, 0.4), ("x", "full", seed, "original", 2.0, 0.7),
                 ("x", "full", seed, "retrain", 1.0, 0.5),
                 ("x", "full", seed, "interference_aware_no_tgp", 3.0, 0.5)]
    table = headline(_board(rows))
    row = table.iloc[0]
    # b: mean 10, a: mean 10 -> tie broken by order; both 10: reduction 100 * (10 - 5) / 10
    assert row["baseline_uis"] == 10.0 and row["ours_uis"] == 5.0
    assert row["reduction_pct"] == pytest.approx(50.0)
    # original (2.0), retrain (1.0) and a variant of ours (3.0) never count as the strongest baseline
    assert row["strongest_baseline"] in {"a", "b"}
    assert row["mia_gap"] == pytest.approx(0.05)
    assert math.isfinite(row["reduction_std"])
    # two forget sets (seeds): a draw of one of them twice has no spread, so the studentized
    # interval is unbounded and nothing is decided
    assert math.isnan(row["reduction_low"]) and math.isnan(row["reduction_high"])
    assert row["target_pct"] == 35.0 and row["verdict"] == "undecided" and row["cells"] == 2
    assert row["clusters"] == 2 and row["better_than_baseline"] == "undecided"


def test_headline_verdicts_from_intervals():
    rows = []
    # partial, two settings x two seeds; baseline 10 everywhere; ours 5 / 3 on setting p:a and 4 / 6
    # on p:b -> reduction of the means 55%; a forget set (seed) is resampled with both its settings:
    # ours' mean is 4.5 on each, so every draw gives 55% (cells resampled apart gave [45%, 65%])
    for setting, values in {"p:a": (5.0, 3.0), "p:b": (4.0, 6.0)}.items():
        for seed, ours in zip((1, 2), values):
            rows += [("x", "partial", 0.1, setting, seed, "interference_aware", ours, 0.52),
                     ("x", "partial", 0.1, setting, seed, "base", 10.0, 0.6),
                     ("x", "partial", 0.1, setting, seed, "retrain", 1.0, 0.5)]
    board = pd.DataFrame(rows, columns=["benchmark", "mode", "ratio", "setting", "seed", "model", "uis2",
                                        "mia_auc"])
    row = headline(board).iloc[0]
    assert row["reduction_pct"] == pytest.approx(55.0)
    assert [row["reduction_low"], row["reduction_high"]] == pytest.approx([55.0, 55.0])
    assert row["verdict"] == "met" and row["cells"] == 4 and row["clusters"] == 2
    # the paper's 52.9% lies below the whole interval
    verdicts = row[["better_than_baseline", "consistent_with_paper", "beyond_paper"]].tolist()
    assert verdicts == ["yes", "no", "yes"]
    # AUC gap 0.02 in every cell: the interval [0.02, 0.02] is under 0.05
    assert [row["mia_gap"], row["mia_gap_low"], row["mia_gap_high"]] == pytest.approx([0.02] * 3)
    assert row["mia_verdict"] == "met"
    assert headline(board, targets={"partial": 30.0}).iloc[0]["verdict"] == "met"
    assert headline(board, targets={"partial": 80.0}).iloc[0]["verdict"] == "missed"



def test_the_sanity_tier_runs_in_the_first_ratio_and_seed_only():
    from core.evaluation.benchmark import SANITY_TIER

    plan = BenchPlan(ratios=(0.01, 0.1), sanity=True)
    first = plan.cell_methods(plan.ratios[0], plan.seeds[0])
    assert set(SANITY_TIER) <= set(first) and first == plan.all_methods()
    for ratio, seed in ((plan.ratios[0], plan.seeds[1]), (plan.ratios[1], plan.seeds[0])):
        assert plan.cell_methods(ratio, seed) == [m for m in first if m not in SANITY_TIER]
    # a plan that names its methods runs each of them in every cell
    named = plan_with(plan, methods=("finetune", "interference_aware"))
    assert named.cell_methods(plan.ratios[1], plan.seeds[1]) == ["finetune", "interference_aware"]

@pytest.mark.slow
def test_tuning_never_reads_a_test_instance(tmp_path, use_cache, val_reads, few_steps):
    from core.data import split_val

    bench = Bench(plan_with(MINI, methods=("grad_ascent",)), tmp_path / "bench", log=lambda _: None,
                  show_bars=False)
    _, _, data = bench.base("synthetic-indoor")
    parts = split_val(data.held_out("test")[0].ids)
    val_reads.clear()  # training the base model evaluates it on all of val, for its card
    for mode in ("full", "partial"):
        bench.tuned("synthetic-indoor", mode, "grad_ascent")
    assert val_reads and set(val_reads) <= set(parts["tuning"])
    records = [json.loads(p.read_text()) for p in (tmp_path / "bench" / "tuning").glob("*.json")]
    assert len(records) == 2 and {r["scored_on"] for r in records} == {"tuning"}
    assert {r["mode"] for r in records} == {"full", "partial"}
    assert {r["seed"] for r in records} == {0}


def test_summary_table_mean_and_std():
    board = pd.DataFrame({"benchmark": ["x"] * 3, "mode": ["full"] * 3, "model": ["m"] * 3,
                          "uis": [1.0, 2.0, 3.0], "forget_gap": [0.0] * 3, "ili": [1.0] * 3,
                          "tli": [math.nan] * 3, "mia_auc": [0.5] * 3, "seconds": [1, 2, 3]})
    table = summary_table(board, ["benchmark", "mode"])
    assert table.loc[0, "cells"] == 3
    assert table.loc[0, "uis_mean"] == 2.0 and table.loc[0, "uis_std"] == 1.0
    assert math.isnan(table.loc[0, "tli_mean"])


@pytest.mark.slow
def test_miniature_bench(tmp_path, use_cache, monkeypatch, few_steps):
    out = tmp_path / "bench"
    Bench(MINI, out, log=lambda _: None, show_bars=False).tune_all()
    frames = run_plan(MINI, out, show_bars=False, log=lambda _: None, workers=2)
    for name in ("leaderboard.csv", "breakdown.csv", "summary.csv", "details.csv", "headline.csv",
                 "oracle.csv", "paired.csv", "noise_floor.csv", "counts.csv", "noise_floor.json",
                 "tuning.csv", "tuning_curves.csv", "ablations.csv", "geometry.csv", "summary.md",
                 "report.html", "tuning.json", "plan.json", "invocations.json"):
        assert (out / name).is_file(), name
    board = frames["leaderboard"]
    # two ratios x (full + one partial setting per task), one seed; references (the second oracle
    # too: seed 1 is a floor seed) and both methods
    assert len(board) == 2 * 4 * 5
    assert set(board["model"]) == {"original", "retrain", "retrain_2", "grad_ascent", "interference_aware"}
    assert set(board["setting"]) == {"full", "partial:segmentation", "partial:depth", "partial:normal"}
    # a base model per seed: the tuning seed's and seed 1's
    assert sorted(p.stem for p in (out / "models").glob("*.safetensors")) == [
        "synthetic-indoor__b0", "synthetic-indoor__b1"]
    assert set(board["base_seed"]) == {1}
    # one oracle per cell and a second one per floor cell, one per tuning request and a second
    # one for its floor: the ratios (whose names hold dots) never share a cached oracle
    assert len(list((out / "oracles").glob("*.safetensors"))) == 8 + 8 + 8 + 8
    assert len(list((out / "oracles").glob("*__s0.safetensors"))) == 8
    oracles = board[board["model"] == "retrain"].set_index(["ratio", "setting"])["forget_gap"]
    assert oracles.loc[0.1].tolist() != oracles.loc[0.2].tolist()
    original = board[board["model"] == "original"]
    # the original against itself: ILI 0, or NaN where one of its retain metrics is 0
    scores = frames["scores"]
    zero_reference = scores[(scores["model"] == "original") & (scores["split"] == "retain")
                            & scores["primary"] & (scores["value"] == 0)]
    cells_with_zero = set(zip(zero_reference["ratio"], zero_reference["setting"]))
    for row in original.itertuples():
        assert row.ili == 0 or (math.isnan(row.ili) and (row.ratio, row.setting) in cells_with_zero), row
    # one study per mode and method, pooled over the ratios (and partial settings) of the tuning
    # seed, each with its own sampler seed, the same budget for each
    tuning = json.loads((out / "tuning.json").read_text())
    assert len(tuning) == 2 * 2 and len({r["sampler_seed"] for r in tuning}) == 4
    assert {(r["mode"], r["method"]) for r in tuning} == {
        (mode, m) for mode in ("full", "partial") for m in MINI.methods}
    for record in tuning:
        assert record["budget"] == 2 and record["seed"] == 0 and record["scored_on"] == "tuning"
        assert record["requests"] == (2 if record["mode"] == "full" else 2 * 3) == len(record["tuned_on"])
        assert "retrain oracle" in record["score"]
        assert len(record["trials"]) == 2 + record["extra_trials"] == len(record["best_so_far"])
        assert ("backoff_partial" in record["trials"][0]["params"]) == (
            record["method"] == "interference_aware" and record["mode"] == "partial")
        finite = [t for t in record["trials"] if t["uis"] is not None]
        assert record["chosen"] == (min(finite, key=lambda t: t["uis"])["params"] if finite else {})
    cell = json.loads(next((out / "cells").glob("*partial-depth*")).read_text())
    study = next(r for r in tuning if r["mode"] == "partial" and r["method"] == "interference_aware")
    assert cell["configs"]["interference_aware"] == {**study["chosen"], "seed": cell["seed"]}
    assert cell["wall_seconds"] > 0
    table = frames["tuning"]
    assert len(table) == 4 and set(table["method"]) == set(MINI.methods)
    assert set(frames["tuning_curves"]["trial"]) >= {1, 2}
    assert (table["trials"] >= 2).all() and table["widened"].map(lambda w: w == "no" or "->" in w).all()
    html = (out / "report.html").read_text()
    # self-contained: plotly.js inlined, no script fetched from the network
    assert html.count("<div id=") >= 5 and "<script src=" not in html and len(html) > 1_000_000
    summary = (out / "summary.md").read_text()
    for heading in ("## Headline", "## Ours against each baseline", "## Forget-gap noise floor",
                    "## Instances per ratio", "## Gap to the retrain oracle", "UIS vs oracle", "## Tuning",
                    "### grad_ascent", "### interference_aware", "## Task geometry of the base models"):
        assert heading in summary and html.count(heading.lstrip("# ")[:20]) >= 1, heading
    assert list(frames["headline"]["mode"]) == ["full", "partial"]
    assert set(frames["headline"]["verdict"]) <= {"met", "missed", "undecided"}
    assert {"reduction_low", "reduction_high", "mia_verdict", "ours_uis_oracle", "floor_uis",
            "ours_uis_v1"} <= set(frames["headline"])
    assert frames["headline"]["floor_uis"].notna().all()
    paired = frames["paired"]
    assert set(paired["baseline"]) == {"grad_ascent"}
    assert (paired[["wins", "ties", "losses"]].sum(axis=1) == paired["cells"]).all()
    # the oracle scores 0 against itself; every cell has a reference attack AUC
    oracle_rows = board[board["model"] == "retrain"]
    assert all(v == 0 or math.isnan(v) for v in oracle_rows["uis_oracle"])
    assert all(v == 0 or math.isnan(v) for v in oracle_rows["uis2"])
    invocations = json.loads((out / "invocations.json").read_text())
    assert [i["ended"] for i in invocations] == ["finished"] and "Summed over the 1 invocations" in summary
    assert (oracle_rows["oracle_gap"] == 0).all()
    assert board["mia_ref_auc"].notna().all()
    counts = frames["counts"].set_index("ratio")
    assert counts.loc[0.1, "forget"] == 1 and counts.loc[0.2, "forget"] == 2
    assert counts.loc[0.1, ["val_calibration", "val_tuning", "val_test"]].tolist() == [1, 1, 8]
    floor = frames["noise_floor"]
    assert set(floor["setting"]) == set(board["setting"]) and set(floor["size"]) == {1, 2}

    # resuming reads every finished cell, oracle and tuning choice back: nothing runs again
    def refuse(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(benchmark, "get_unlearner", refuse)
    monkeypatch.setattr(benchmark, "train_checkpoint", refuse)
    monkeypatch.setattr(benchmark, "tune", refuse)
    again = run_plan(MINI, out, show_bars=False, log=lambda _: None)
    pd.testing.assert_frame_equal(again["leaderboard"], frames["leaderboard"])

    with pytest.raises(BenchError, match="different plan.*epochs"):
        Bench(plan_with(MINI, epochs=2), out)


def test_tune_only_touches_no_reported_seed(tmp_path, use_cache, few_steps):
    plan = plan_with(MINI, ratios=(0.1,), methods=("grad_ascent",))
    out = tmp_path / "bench"
    table = benchmark.tune_plan(plan, out, show_bars=False, log=lambda _: None)
    assert list(table["method"]) == ["grad_ascent", "grad_ascent"]  # full and partial
    assert set(table["mode"]) == {"full", "partial"}
    assert len(json.loads((out / "tuning.json").read_text())) == 2
    assert sorted(p.name for p in (out / "models").glob("*.json")) == ["synthetic-indoor__b0.json"]
    assert all("__s0" in p.name for p in (out / "oracles").glob("*.json"))
    assert not (out / "cells").exists() or not any((out / "cells").iterdir())


@pytest.mark.slow
def test_protocol_5_tuning_rescores_on_more_draws_and_measures_its_floor(tmp_path, use_cache, few_steps):
    from core.unlearning.search import search_space

    methods = ("grad_ascent", "interference_aware", "interference_aware_no_tgp")
    plan = plan_with(MINI, ratios=(0.1,), methods=methods, draws=2, rescore=2,
                     partial_only=("synthetic-indoor:depth",))
    out = tmp_path / "bench"
    table = benchmark.tune_plan(plan, out, show_bars=False, log=lambda _: None)
    # the variant of ours has no study: it runs at ours' choice
    assert sorted(set(table["method"])) == ["grad_ascent", "interference_aware"] and len(table) == 4
    records = json.loads((out / "tuning.json").read_text())
    for record in records:
        assert record["draws"] == 2 and record["requests"] == 1  # full; partial: depth only
        assert 1 <= len(record["rescored"]) <= 2 and all(len(r["scores"]) == 2 for r in record["rescored"])
        assert [d["instances"] for d in record["draws_tuned_on"][0]] != \
            [d["instances"] for d in record["tuned_on"]]
    # each draw's request has its own oracle; the floor's second oracles are draw 0's
    names = sorted(p.stem for p in (out / "oracles").glob("*.safetensors"))
    assert names == ["synthetic-indoor__r0.1__full__s0", "synthetic-indoor__r0.1__full__s0__2",
                     "synthetic-indoor__r0.1__full__s0__d1", "synthetic-indoor__r0.1__partial-depth__s0",
                     "synthetic-indoor__r0.1__partial-depth__s0__2",
                     "synthetic-indoor__r0.1__partial-depth__s0__d1"]
    floors = json.loads((out / "tuning_floor.json").read_text())
    assert set(floors) == {"synthetic-indoor__full", "synthetic-indoor__partial"}
    assert table["floor"].notna().all() and set(table["plateaued"]) <= {True, False}
    bench = Bench(plan, out, show_bars=False)
    ours = next(r for r in records if r["method"] == "interference_aware" and r["mode"] == "full")
    variant = bench.tuned("synthetic-indoor", "full", "interference_aware_no_tgp")
    searched = search_space("interference_aware_no_tgp", "full")
    assert variant == {k: v for k, v in ours["chosen"].items() if k in searched}


def test_a_variant_takes_ours_choice_of_the_knobs_it_searches(tmp_path):
    from core.unlearning import get_unlearner

    methods = ("interference_aware", "interference_aware_every", "interference_aware_loss_stop")
    bench = Bench(plan_with(MINI, ratios=(0.1,), methods=methods), tmp_path, show_bars=False)
    chosen = {"lr": 1e-3, "steps": 20, "alpha": 0.4, "basis_budget": 0.3, "saturation": 0.97, "band": 1.5}
    path = bench.tuning_path("synthetic-indoor", "full", "interference_aware")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"chosen": chosen}))
    # a knob the variant fixes (its range holds the variant's value alone) is not taken from ours'
    every = bench.tuned("synthetic-indoor", "full", "interference_aware_every")
    assert every == {k: v for k, v in chosen.items() if k != "saturation"}
    get_unlearner("interference_aware_every", every)
    # nor one it does not read (a loss-space target has no band; its dead zone keeps its default)
    assert "band" not in bench.tuned("synthetic-indoor", "full", "interference_aware_loss_stop")


def _held(job):
    """A worker's job for the stop tests: job 0 waits until another job has started, then stops
    as Ctrl-C stops it; every other job waits for the "release" file (the guard's, or never)
    and marks that it ran to its end, or that it unwound when stopped. "ignore" jobs also ignore
    SIGTERM (a worker stuck in C code)."""
    import os
    import signal
    import time
    from pathlib import Path

    index, folder, ignore, raises = job
    folder = Path(folder)
    if ignore:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # marked started inside it: a stop that comes right after the mark still unwinds here
        (folder / f"started-{index}-{os.getpid()}").touch()
        while not (folder / "release").exists():
            if raises and index == 0 and len(list(folder.glob("started-*"))) > 1:
                raise KeyboardInterrupt
            time.sleep(0.05)
    except KeyboardInterrupt:
        (folder / f"unwound-{index}").touch()  # a `finally` or `except` of the job ran
        raise
    (folder / f"finished-{index}").touch()


def _alive(pid):
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("ignore, where", [(False, "job"), (True, "job"), (False, "main")])
def test_ctrl_c_stops_every_worker(tmp_path, monkeypatch, ignore, where):
    """A KeyboardInterrupt in one worker's job (Ctrl-C reaches every process of the terminal),
    or in the main process alone (where="main": SIGINT to it only), stops `_in_workers`: it
    raises KeyboardInterrupt, the other workers' running jobs and the queued ones never run to
    their end, and no worker process is left; one that ignores SIGTERM is killed after
    `STOP_GRACE_S`, the others stop their job as Ctrl-C does (so its clean-up runs). Before,
    the workers went on with every queued job and the pool waited for them. A guard releases
    the jobs after 600 s (spawned workers can take minutes to start on a loaded host), so that a
    regression fails instead of hanging."""
    import threading

    from core.evaluation import processes

    monkeypatch.setattr(processes, "STOP_GRACE_S", 10.0)  # a loaded host may take seconds to unwind
    bench = Bench(MINI, tmp_path / "out", log=lambda _: None, show_bars=False)
    folder = tmp_path / "jobs"
    folder.mkdir()
    guard = threading.Timer(600, (folder / "release").touch)
    guard.start()

    def interrupt_main():
        import os
        import signal
        import time

        while len(list(folder.glob("started-*"))) < 2 and not (folder / "release").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)  # raised in the main thread, inside _in_workers

    if where == "main":
        threading.Thread(target=interrupt_main, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            bench._in_workers(_held, [(i, str(folder), ignore, where == "job") for i in range(6)], 2, "jobs")
    finally:
        guard.cancel()
    assert not list(folder.glob("finished-*"))
    pids = {int(path.name.split("-")[2]) for path in folder.glob("started-*")}
    assert len(pids) == 2 and not [pid for pid in pids if _alive(pid)]
    started = {path.name.split("-")[1] for path in folder.glob("started-*")}
    unwound = {path.name.split("-")[1] for path in folder.glob("unwound-*")}
    assert unwound == ({"0"} if ignore else started) and len(started) >= 2


def test_a_results_folder_travels_without_its_weights(tmp_path, use_cache, monkeypatch, few_steps):
    """The JSON of a results folder is its record; the checkpoints are caches. A copy without the
    .safetensors files resumes: only what unfinished work needs is trained again, and each
    retrained checkpoint must be the one its card names (same SHA-256), or the run stops with
    the card as it was."""
    import shutil

    from core.checkpoints import read_card

    plan = plan_with(MINI, ratios=(0.1,), methods=("grad_ascent",))
    out, carried = tmp_path / "bench", tmp_path / "carried"
    frames = run_plan(plan, out, show_bars=False, log=lambda _: None)
    shutil.copytree(out, carried, ignore=shutil.ignore_patterns("*.safetensors"))
    assert not list(carried.rglob("*.safetensors"))

    trained = []
    real = benchmark.get_unlearner

    def counted(name, config=None):
        trained.append(name)
        return real(name, config)

    monkeypatch.setattr(benchmark, "get_unlearner", counted)
    monkeypatch.setattr(benchmark, "tune", lambda *a, **k: pytest.fail("a finished study ran again"))
    again = run_plan(plan, carried, show_bars=False, log=lambda _: None)
    pd.testing.assert_frame_equal(again["leaderboard"], frames["leaderboard"])
    assert trained == []  # every study and cell is finished: no oracle is needed again
    for card in (carried / "models").glob("*.json"):  # the base models the report reads, retrained
        weights = card.with_suffix(".safetensors")
        assert weights.is_file() and read_card(card).weights_sha256 == read_card(out / "models" / card.name) \
            .weights_sha256

    # a retrained checkpoint that differs from its card: stop, and keep the card as it was
    broken = tmp_path / "broken"
    shutil.copytree(out, broken, ignore=shutil.ignore_patterns("*.safetensors"))
    card_path = broken / "models" / "synthetic-indoor__b1.json"
    card = json.loads(card_path.read_text())
    card["weights_sha256"] = "0" * 64
    card_path.write_text(json.dumps(card))
    before = card_path.read_text()
    with pytest.raises(BenchError, match=r"synthetic-indoor__b1.*000000000000.*not the checkpoint"):
        run_plan(plan, broken, show_bars=False, log=lambda _: None)
    assert card_path.read_text() == before
    assert not (broken / "models" / "synthetic-indoor__b1.safetensors").exists()
