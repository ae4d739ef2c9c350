"""The dashboard's jobs: queued in SqliteHuey, run by `mtu worker`, followed through the ledger."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.checkpoints import load_checkpoint, read_card
from core.jobs import submit
from core.ledger import Ledger
from core.requests import ForgetRequest


def _submit(street_copy, tmp_path, steps=2, name="out"):
    card = read_card(street_copy)
    request = ForgetRequest.build([3, 5], ["depth"], card.train_ids, ["segmentation", "depth"])
    return submit(Ledger(), street_copy, card, request, "grad_ascent", {"steps": steps, "device": "cpu",
                                                                   "lr": 1e-4},
                  reason="ticket 9", out=tmp_path / name)


def _wait(ledger, run_id, statuses, seconds=240):
    deadline = time.time() + seconds
    while time.time() < deadline:
        row = ledger.runs(run_id=run_id)[0]
        if row["status"] in statuses:
            return row
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} is still {row['status']}")


@pytest.mark.slow
def test_an_immediate_job_runs_records_and_saves(street_copy, tmp_path, use_cache):
    (run_id,) = _submit(street_copy, tmp_path)
    row = Ledger().runs(run_id=run_id)[0]
    assert row["status"] == "done" and row["source"] == "dashboard" and row["reason"] == "ticket 9"
    model, card = load_checkpoint(row["result_path"])
    assert card.request["extras"]["ledger_run"] == run_id and card.request["tasks"] == ["depth"]
    assert [s["total"] for s in Ledger().steps(run_id)] == [2, 2]


@pytest.mark.slow
def test_dashboard_results_are_stored_by_content_and_reopened_from_the_store(street_copy, use_cache):
    card = read_card(street_copy)
    request = ForgetRequest.build([3, 5], None, card.train_ids, ["segmentation", "depth"])
    config = {"steps": 2, "device": "cpu", "lr": 1e-4, "seed": 4}
    ledger = Ledger()
    first, second = (submit(ledger, street_copy, card, request, "grad_ascent", config)[0] for _ in range(2))
    rows = [ledger.runs(run_id=run)[0] for run in (first, second)]
    assert [r["status"] for r in rows] == ["done", "done"]
    path = Path(rows[0]["result_path"])
    # the same request, config and seed give the same weights: one file, two ledger rows
    assert rows[1]["result_path"] == str(path) and rows[0]["result_sha256"] == rows[1]["result_sha256"]
    assert path.parent == ledger.results_folder() and path.stem == rows[0]["result_sha256"][:16]
    model, stored = load_checkpoint(path)
    assert stored.request["extras"]["ledger_run"] == first
    other = submit(ledger, street_copy, card, request, "grad_ascent", {**config, "seed": 5, "lr": 1e-3})[0]
    assert Path(ledger.runs(run_id=other)[0]["result_path"]) != path
    assert len(list(ledger.results_folder().glob("*.safetensors"))) == 2


def test_a_job_whose_checkpoint_changed_after_it_was_queued_fails_by_name(street_copy):
    """The ledger records a run on the weights it was queued on (their hash): a job finds other
    weights at the path, it fails naming both, and runs nothing."""
    from core.checkpoints import SAMPLE_MODELS_DIR

    card = read_card(street_copy)
    for suffix in (".json", ".safetensors"):  # other weights at the same path, before the job runs
        other = SAMPLE_MODELS_DIR / f"synthetic-indoor{suffix}"
        street_copy.with_suffix(suffix).write_bytes(other.read_bytes())
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    (run_id,) = submit(Ledger(), street_copy, card, request, "grad_ascent", {"steps": 1, "device": "cpu"})
    (row,) = Ledger().runs(run_id=run_id)
    assert row["status"] == "failed" and row["model_sha256"] == card.weights_sha256
    assert f"{street_copy}.safetensors" in row["error"] and card.weights_sha256[:16] in row["error"]
    assert "queue the run again" in row["error"] and not Ledger().steps(run_id)


def test_one_retrain_oracle_per_model_and_request_content(street_copy, tmp_path, monkeypatch):
    """Issue 19: the retrain oracle is trained once per (model weights, instances, tasks, data).
    A later request with the same content, whichever page or name asks, reuses the oracle the
    ledger records (queued, running or done with its result on disk) instead of queueing
    another; a request with other content, or a failed, cancelled or lost oracle, gets a new one."""
    import shutil

    from core import jobs

    queued: list[dict] = []
    monkeypatch.setattr(jobs, "queue", lambda home=None: (None, queued.append))  # no worker: they wait
    card = read_card(street_copy)
    ledger = Ledger()

    def ask(instances, tasks=None, data_root=None, path=street_copy, **extra):
        request = ForgetRequest.build(instances, tasks, card.train_ids, ["segmentation", "depth"])
        options = {"with_oracle": True, "data_root": data_root, **extra}
        return submit(ledger, path, card, request, "grad_ascent", {"steps": 1}, **options)

    def oracles() -> list[int]:
        return [job["run"] for job in queued if job["method"] == "retrain"]

    first = ask([3, 5])
    assert oracles() == [first[1]]
    copy = tmp_path / "copy"  # the same weights under another name are the same model
    for suffix in (".json", ".safetensors"):
        shutil.copy(street_copy.with_suffix(suffix), copy.with_suffix(suffix))
    again = ask([5, 3], path=copy)
    assert again[1] == first[1] and oracles() == [first[1]]  # reused: no new retrain run queued
    assert [r["method"] for r in ledger.runs()].count("retrain") == 1
    compared = ask([3, 5], with_oracle=False, more=[("retrain", {"device": "cpu"})])  # Compare's
    assert compared[1] == first[1] and oracles() == [first[1]]

    others = [ask([3, 6]), ask([3, 5], ["depth"]), ask([3, 5], data_root=str(tmp_path))]
    assert oracles() == [first[1]] + [ids[1] for ids in others]  # other content: one oracle each
    assert ask([3, 5], ["depth"])[1] == others[1][1]

    result = tmp_path / "oracle"  # the oracle ends: a done oracle whose result is on disk is reused
    for suffix in (".json", ".safetensors"):
        shutil.copy(street_copy.with_suffix(suffix), result.with_suffix(suffix))
    ledger.start_run(first[1])
    ledger.finish_run(first[1], [], card.weights_sha256, result.with_suffix(".safetensors"))
    found = jobs.recorded_oracle(ledger, card.weights_sha256, [3, 5], ["segmentation", "depth"])
    assert found is not None and found["run"] == first[1]
    assert ask([3, 5])[1] == first[1]
    result.with_suffix(".safetensors").unlink()  # its result is gone: a new oracle
    lost = ask([3, 5])[1]
    assert lost not in (first[1], *[ids[1] for ids in others]) and oracles()[-1] == lost
    ledger.cancel(lost)  # cancelled before it ran: a new one too
    assert ask([3, 5])[1] not in (first[1], lost)


def _start_worker() -> subprocess.Popen:
    """`mtu worker` on the test's ledger (MTU_HOME), as `mtu app` starts it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MTU_QUEUE", None)
    return subprocess.Popen([sys.executable, "-m", "core.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_jobs_wait_their_turn_and_can_be_cancelled(street_copy, tmp_path, use_cache, monkeypatch):
    monkeypatch.delenv("MTU_QUEUE")  # queued for the worker, not run at once
    ledger = Ledger()
    first = _submit(street_copy, tmp_path, steps=2, name="first")[0]
    second = _submit(street_copy, tmp_path, steps=2, name="second")[0]
    assert [ledger.queue_position(first), ledger.queue_position(second)] == [1, 2]
    # the queue holds JSON, never a pickle: the worker unpickles nothing it reads
    import json
    import sqlite3

    with sqlite3.connect(ledger.path.parent / "queue.sqlite") as queue_db:
        entries = [json.loads(row[0]) for row in queue_db.execute("SELECT data FROM task")]
    assert [e["args"][0]["run"] for e in entries] == [first, second]
    assert {e["name"].split(".")[-1] for e in entries} == {"unlearn"}
    ledger.cancel(second)
    worker = _start_worker()
    try:
        assert _wait(ledger, first, {"done", "failed"})["status"] == "done"
        row = _wait(ledger, second, {"done", "failed", "interrupted"})
        assert row["status"] == "interrupted" and "cancelled before it started" in row["error"]
        third = _submit(street_copy, tmp_path, steps=5000, name="third")[0]
        _wait(ledger, third, {"running"})
        while not ledger.steps(third):
            time.sleep(0.1)
        ledger.cancel(third)
        row = _wait(ledger, third, {"done", "failed", "interrupted"})
        assert row["status"] == "interrupted" and "cancelled from the dashboard at step" in row["error"]
        assert not (tmp_path / "third.json").exists()
    finally:
        worker.kill()
        worker.wait()


def test_a_killed_worker_leaves_the_original_whole_and_the_run_interrupted(street_copy, tmp_path, use_cache,
                                                                             monkeypatch):
    monkeypatch.delenv("MTU_QUEUE")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    ledger = Ledger()
    run_id = _submit(street_copy, tmp_path, steps=5000, name="killed")[0]
    worker = _start_worker()
    try:
        _wait(ledger, run_id, {"running"})
        while len(ledger.steps(run_id)) < 3:
            time.sleep(0.1)
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    finally:
        worker.kill()
    assert Ledger().runs(run_id=run_id)[0]["status"] == "interrupted"  # marked by the next opening
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in before}
    assert after == before  # the original checkpoint is byte-identical
    assert not any(p.name.startswith("killed") for p in tmp_path.iterdir())


@pytest.mark.parametrize("delay", [0.5, 2.0, 4.0, 7.0])
def test_a_cli_run_killed_at_any_moment_leaves_nothing_half_written(street_copy, tmp_path, use_cache, delay):
    """kill -9 at several moments of `mtu unlearn`: the original stays byte-identical, the output
    name holds nothing or a checkpoint that loads, and the ledger holds whole rows only (a run
    left running is marked interrupted when the ledger is next opened)."""
    before = street_copy.with_suffix(".safetensors").read_bytes()
    out = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "core.cli", "unlearn", "--model", str(street_copy),
                                "--instances", "3,5", "--method", "interference_aware", "--set", "steps=3",
                                "--device", "cpu", "--out", str(out)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert street_copy.with_suffix(".safetensors").read_bytes() == before
    if out.with_suffix(".json").exists():
        load_checkpoint(out)  # a card under the final name always has its weights
    rows = Ledger().runs()
    assert all(row["status"] in ("done", "interrupted") for row in rows), rows
