"""The bench across processes: tuning studies in a shared Optuna storage (exact budgets, a killed
process's trials redone) and the studies and cells of `mtu bench` claimed one process each."""

import json
import multiprocessing
import threading

import pandas as pd
import pytest

from core.evaluation import storage as shared
from core.evaluation import tuning
from core.evaluation.storage import open_storage
from core.evaluation.tuning import tune, widen_trials
from core.unlearning.grad_ascent import GradAscent
from core.unlearning.search import Range

SPACE = {"lr": Range(1e-4, 1e-2, log=True), "steps": Range(5, 6, integer=True)}
"""steps 5..6 always has its choice on an edge, so every study widens twice."""


class _Full:
    mode = "full"


def _score(method, config, *args):
    return config["lr"] * 100 + config["steps"], 0.0


@pytest.fixture()
def fake_scores(monkeypatch):
    monkeypatch.setattr(GradAscent, "search_space", SPACE)
    monkeypatch.setattr(tuning, "score_config", _score)


def _comparable(record):
    return {"trials": [(t["round"], t["params"], t["uis"], t.get("error")) for t in record["trials"]],
            "rounds": record["rounds"], "chosen": record["chosen"], "best_uis": record["best_uis"],
            "widened": record["widened"], "extra_trials": record["extra_trials"]}


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_study_in_a_storage_gives_the_in_memory_record(tmp_path, fake_scores, kind):
    url = str(tmp_path / "studies.log") if kind == "journal" else f"sqlite:///{tmp_path / 'studies.db'}"
    alone = tune("grad_ascent", None, [_Full()], None, trials=4, seed=0)
    shared = tune("grad_ascent", None, [_Full()], None, trials=4, seed=0, storage=open_storage(url),
                  study_name="x__full__s0__grad_ascent")
    assert len(alone["rounds"]) == 3 and _comparable(shared) == _comparable(alone)
    # read back from the storage: nothing runs again, the same record
    again = tune("grad_ascent", None, [_Full()], None, trials=4, seed=0, storage=open_storage(url),
                 study_name="x__full__s0__grad_ascent")
    assert _comparable(again) == _comparable(alone)
    with pytest.raises(ValueError, match="study_name"):
        tune("grad_ascent", None, [_Full()], None, trials=4, storage=open_storage(url))


def test_processes_sharing_a_study_share_its_budget_exactly(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(GradAscent, "search_space", SPACE)
    monkeypatch.setattr(tuning, "score_config", lambda *a: (time.sleep(0.05), _score(*a))[1])
    url = str(tmp_path / "studies.log")
    records = [None, None]

    def worker(index):
        records[index] = tune("grad_ascent", None, [_Full()], None, trials=4, seed=0,
                              storage=open_storage(url), study_name="shared")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    one, two = records
    # the widening rounds depend on what TPE drew (side by side it reads other trials), the budget
    # of each round does not: 4, then widen_trials(4) per widening
    rounds = len(one["rounds"])
    assert [r["trials"] for r in one["rounds"]] == [4] + [widen_trials(4)] * (rounds - 1)
    assert len(one["trials"]) == 4 + (rounds - 1) * widen_trials(4) == 4 + one["extra_trials"]
    assert [t["round"] for t in one["trials"]] == [0] * 4 + sum(([r] * widen_trials(4)
                                                                 for r in range(1, rounds)), [])
    import optuna

    study = optuna.load_study(study_name="shared", storage=open_storage(url))
    assert sum("record" in t.user_attrs for t in study.trials) == len(one["trials"])
    assert _comparable(one) == _comparable(two)


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_trial_left_running_by_a_killed_process_is_redone_on_resume(tmp_path, fake_scores, monkeypatch,
                                                                        kind):
    import optuna

    url = str(tmp_path / "studies.log") if kind == "journal" else f"sqlite:///{tmp_path / 'studies.db'}"
    monkeypatch.setattr(shared, "GRACE_S", 1)
    monkeypatch.setattr(shared, "HEARTBEAT_S", 1)
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="killed", direction="minimize")
    with pytest.warns(UserWarning, match="Heartbeat"):  # Optuna expects heartbeats from study.optimize
        left = study.ask()  # a killed process's trial: RUNNING, its heartbeat stops
    storage.record_heartbeat(left._trial_id)
    import time

    time.sleep(2.5)
    record = tune("grad_ascent", None, [_Full()], None, trials=4, seed=0, storage=open_storage(url),
                  study_name="killed")
    stored = optuna.load_study(study_name="killed", storage=open_storage(url))
    states = {t.number: t.state for t in stored.trials}
    assert states[left.number] == optuna.trial.TrialState.FAIL
    assert len(record["trials"]) == 4 + 2 * widen_trials(4) and record["failed"] == 0
    assert left.number not in [t["number"] for t in record["trials"]]


def _mini_plan():
    """test_benchmark's MINI plan at one ratio, one method and one partial setting."""
    from core.evaluation.benchmark import BenchPlan

    return BenchPlan(benchmarks=("synthetic-indoor",), ratios=(0.1,), seeds=(1,), methods=("grad_ascent",),
                     trials=2, n_train=12, n_val=10, size=(32, 32), epochs=1, width=4, retain_sample=8,
                     draws=2, rescore=2, partial_only=("synthetic-indoor:depth",))


def _few_steps():
    from core.unlearning.search import LR

    return {"lr": LR, "steps": Range(1, 3, integer=True)}


def _bench_process(out, storage, cache):
    import os

    os.environ["MTU_CACHE_DIR"] = cache
    GradAscent.search_space = _few_steps()
    from core.evaluation.benchmark import run_plan

    run_plan(_mini_plan(), out, show_bars=False, log=lambda _: None, storage=storage)


@pytest.mark.slow
def test_two_processes_sharing_a_storage_give_the_one_process_bench(tmp_path, use_cache, monkeypatch):
    from core.evaluation.benchmark import run_plan

    monkeypatch.setattr(GradAscent, "search_space", _few_steps())

    alone = run_plan(_mini_plan(), tmp_path / "alone", show_bars=False, log=lambda _: None)
    shared, url = tmp_path / "shared", f"sqlite:///{tmp_path / 'studies.db'}"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_bench_process, args=(str(shared), url, str(use_cache)))
                 for _ in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(600)
    assert [p.exitcode for p in processes] == [0, 0]

    def tuning_of(folder):
        records = json.loads((folder / "tuning.json").read_text())
        return {(r["mode"], r["method"]): _comparable(r) for r in records}

    assert tuning_of(shared) == tuning_of(tmp_path / "alone")
    board = pd.read_csv(shared / "leaderboard.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(board, alone["leaderboard"].drop(columns="seconds").reset_index(drop=True),
                                  check_dtype=False)
    # every study and cell was computed by one of the two processes: each claim names its owner
    # (how the pieces split between them depends on which started first, so it is not asserted)
    claims = [json.loads(p.read_text()) for p in (shared / "claims").glob("*.json")]
    assert claims and all({"host", "pid", "time"} <= set(c) for c in claims)
    assert {c["pid"] for c in claims} <= {p.pid for p in processes}


def test_a_claim_is_held_by_one_process_and_taken_over_when_its_owner_stopped(tmp_path, monkeypatch):
    import subprocess
    import sys

    from core.evaluation import claims

    folder = tmp_path / "claims"
    with claims.claim(folder, "cell__a") as mine:
        assert mine
        with claims.claim(folder, "cell__a") as again:  # held by a live process (this one)
            assert not again
    finished = json.loads((folder / "cell__a.json").read_text())
    assert {"host", "pid", "time", "finished"} <= set(finished)
    assert claims.stale(folder / "cell__a.json")  # finished: asked for again only when its output is gone
    # a killed process's claim on this host: its pid is gone, so the claim is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (folder / "cell__b.json").write_text(json.dumps({**claims.owner(), "pid": int(dead), "time": 0}))
    with claims.claim(folder, "cell__b") as mine:
        assert mine and json.loads((folder / "cell__b.json").read_text())["pid"] == claims.owner()["pid"]
    # another machine's claim is stale once untouched for GRACE_S
    (folder / "cell__c.json").write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))
    with claims.claim(folder, "cell__c") as mine:
        assert not mine
    monkeypatch.setattr(claims, "GRACE_S", -1.0)
    with claims.claim(folder, "cell__c") as mine:
        assert mine
    # work that raises gives its claim back
    with pytest.raises(RuntimeError), claims.claim(folder, "cell__d"):
        raise RuntimeError("a method failed")
    assert not (folder / "cell__d.json").exists()


def test_mtu_bench_passes_its_storage_and_refuses_fresh_with_it(tmp_path, monkeypatch):
    from core.cli import main
    from core.evaluation import benchmark

    seen = {}

    def tune_plan(plan, out, workers=1, storage=None):
        seen.update(out=out, storage=storage)
        return pd.DataFrame(columns=["benchmark", "mode", "method", "trials", "draws", "best_uis",
                                     "still_improving", "floor", "plateaued"])

    monkeypatch.setattr(benchmark, "tune_plan", tune_plan)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    assert main(["bench", "--quick", "--tune-only", "--out", str(tmp_path / "b"), "--storage", url]) == 0
    assert seen == {"out": str(tmp_path / "b"), "storage": url}
    with pytest.raises(SystemExit, match="--fresh.*new --storage"):
        main(["bench", "--quick", "--fresh", "--out", str(tmp_path / "b"), "--storage", url])


def test_processes_opening_a_new_database_at_once_both_get_the_storage(monkeypatch):
    """Two processes opening a fresh sqlite storage together race to create its schema: the
    loser's RDBStorage raised "UNIQUE constraint failed: alembic_version.version_num" (seen in a
    full run). Opening tries again, and finds the schema the other made."""
    import optuna
    import sqlalchemy.exc

    from core.evaluation import storage

    made = []

    def racing(url, **kwargs):
        made.append(url)
        if len(made) == 1:
            raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {},
                                                Exception("UNIQUE constraint failed"))
        return "the storage"

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(storage, "OPEN_PAUSE_S", 0.0)
    assert storage.open_storage("sqlite:///studies.db") == "the storage" and len(made) == 2

    def broken(url, **kwargs):
        raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("unable to open database file"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    with pytest.raises(sqlalchemy.exc.OperationalError):
        storage.open_storage("sqlite:///nowhere/studies.db")


def _record_invocations(out, index, count):
    """A process of the test below: once the "go" file exists, append `count` invocations."""
    import os
    import time
    from pathlib import Path

    from core.evaluation.benchmark import _record_invocation

    out = Path(out)
    (out / f"ready-{index}").touch()
    while not (out / "go").exists():
        time.sleep(0.01)
    for i in range(count):
        _record_invocation(out, f"{index}-{i}-{os.getpid()}", 1.0, "finished")


def test_invocations_appended_at_once_by_several_processes_are_all_kept(tmp_path):
    """invocations.json is read, extended and written again by every invocation on a folder:
    processes sharing --out do so at once, and unlocked they lost each other's entries."""
    count, workers = 25, 4
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_record_invocations, args=(str(tmp_path), i, count))
                 for i in range(workers)]
    for process in processes:
        process.start()
    import time

    for _ in range(6000):  # each process imports the bench first; start them together
        if len(list(tmp_path.glob("ready-*"))) == workers:
            break
        time.sleep(0.05)
    (tmp_path / "go").touch()
    for process in processes:
        process.join(300)
    assert [p.exitcode for p in processes] == [0] * workers
    entries = json.loads((tmp_path / "invocations.json").read_text())
    started = sorted(entry["started"].rsplit("-", 1)[0] for entry in entries)
    assert started == sorted(f"{i}-{j}" for i in range(workers) for j in range(count))


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_study_stopped_by_ctrl_c_mid_trial_resumes_at_once(tmp_path, fake_scores, monkeypatch, kind):
    """Ctrl-C (or a stopped bench worker's SIGTERM, `core.evaluation.processes`) in the middle
    of a shared study's trial: Optuna marks that trial failed, so the next run redoes it at once
    (no wait for its heartbeat to go stale) and the study keeps its exact budget."""
    import optuna

    url = str(tmp_path / "studies.log") if kind == "journal" else f"sqlite:///{tmp_path / 'studies.db'}"
    calls = []

    def stopped_at_the_third(method, config, *args):
        calls.append(config)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return _score(method, config)

    monkeypatch.setattr(tuning, "score_config", stopped_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        tune("grad_ascent", None, [_Full()], None, trials=4, seed=0, storage=open_storage(url),
             study_name="stopped")
    monkeypatch.setattr(tuning, "score_config", _score)
    monkeypatch.setattr(tuning.time, "sleep", lambda _: pytest.fail("the resume waited for a trial"))
    record = tune("grad_ascent", None, [_Full()], None, trials=4, seed=0, storage=open_storage(url),
                  study_name="stopped")
    stored = optuna.load_study(study_name="stopped", storage=open_storage(url))
    assert stored.trials[2].state == optuna.trial.TrialState.FAIL
    assert len(record["trials"]) == 4 + 2 * widen_trials(4) and record["failed"] == 0
    assert 2 not in [t["number"] for t in record["trials"]]


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_two_mtu_tune_sharing_a_storage_run_the_budget_once_and_choose_as_one(tmp_path, use_cache,
                                                                             monkeypatch, kind):
    """`mtu tune --storage URL` twice at once (two threads here; processes and machines alike):
    the studies are split between them (each claimed by one, `core.evaluation.claims`), so
    together they run each study's budget once, not twice, and both write the choices one
    `mtu tune` makes alone."""
    from core.cli import main
    from core.evaluation import claims

    model = tmp_path / "tiny"
    assert main(["train", "--benchmark", "synthetic-street", "--n-train", "12", "--n-val", "30", "--size",
                 "32x32", "--arg", "width=4", "--epochs", "1", "--batch-size", "4", "--device", "cpu",
                 "--out", str(model)]) == 0
    monkeypatch.setattr(GradAscent, "search_space", SPACE)
    monkeypatch.setattr(claims, "POLL_S", 0.05)
    runs = []

    def counted_score(method, config, *args):
        import time

        runs.append(config)
        time.sleep(0.02)  # so that the two invocations overlap
        return _score(method, config)

    monkeypatch.setattr(tuning, "score_config", counted_score)
    tune = ["tune", "--model", str(model), "--trials", "4", "--methods", "grad_ascent", "--ratio", "0.2"]
    assert main([*tune, "--out", str(tmp_path / "alone.json")]) == 0
    alone, budget = json.loads((tmp_path / "alone.json").read_text())["tiny"], len(runs)
    assert budget == 2 * (4 + 2 * widen_trials(4))  # full and partial, each widened twice
    runs.clear()
    shared = tmp_path / "shared.json"
    url = str(tmp_path / "studies.log") if kind == "journal" else f"sqlite:///{tmp_path / 'studies.db'}"
    codes = []
    threads = [threading.Thread(target=lambda: codes.append(main([*tune, "--out", str(shared), "--storage",
                                                                  url])))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [0, 0] and len(runs) == budget
    entry = json.loads(shared.read_text())["tiny"]
    assert entry["modes"] == alone["modes"] and entry["best_uis"] == alone["best_uis"]
    assert entry["extra_trials"] == alone["extra_trials"]
    held = [json.loads(p.read_text()) for p in (tmp_path / "shared.json.claims").glob("study__tiny__*.json")]
    assert len(held) == 2 and all("finished" in claim for claim in held)  # one claim per study
    # a third invocation finds every study done: it runs nothing and writes the same choices
    assert main([*tune, "--out", str(shared), "--storage", url]) == 0
    assert len(runs) == budget and json.loads(shared.read_text())["tiny"]["modes"] == alone["modes"]


def test_mtu_tune_refuses_storage_with_from_bench(tmp_path):
    from core.cli import main

    with pytest.raises(SystemExit, match="--from-bench tunes nothing.*--storage"):
        main(["tune", "--from-bench", str(tmp_path), "--out", str(tmp_path / "t.json"), "--storage",
              str(tmp_path / "studies.log")])
