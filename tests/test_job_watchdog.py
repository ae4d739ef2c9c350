"""The worker's watchdog: each job runs in a process of its own, which the worker stops when the
job is cancelled and does not stop by itself, or when it makes no progress for
MTU_JOB_STALL_SECONDS; the run is then marked interrupted and the next job runs.

The blocking job here is one whose plugin module reads a FIFO at import (nothing ever writes to
it), before the job's first step. No assertion depends on the machine's speed: the tests wait
for markers the job writes, with generous deadlines."""

import os
import subprocess
import sys
import threading
import time

import pytest

from core.checkpoints import read_card
from core.jobs import PLUGINS_VARIABLE, execute, queue, submit
from core.ledger import Ledger
from core.requests import ForgetRequest

BLOCKING = """
import os, pathlib, time
folder = pathlib.Path({folder!r})
(folder / f"imported-{{os.getpid()}}").write_text("")
if (folder / "block").exists():
    (folder / "started").write_text("")
    open(folder / "fifo").read()  # no writer: blocks for ever
if (folder / "wait").exists():
    (folder / "started").write_text("")
    while not (folder / "go").exists():
        time.sleep(0.05)
"""


@pytest.fixture()
def blocking_plugin(tmp_path, monkeypatch):
    """(module name, its folder): a plugin that, once a "block" file exists, says it started and
    blocks on reading a FIFO, or, once a "wait" file exists, says it started and waits for "go"."""
    folder = tmp_path / "plugin"
    folder.mkdir()
    os.mkfifo(folder / "fifo")
    (folder / "waiting_plugin.py").write_text(BLOCKING.format(folder=str(folder)))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(PLUGINS_VARIABLE, "waiting_plugin")
    monkeypatch.delenv("MTU_QUEUE")  # queued, and run the way the worker runs a job
    return "waiting_plugin", folder


def _submit(street_copy, tmp_path, name, plugins=(), steps=2):
    card = read_card(street_copy)
    request = ForgetRequest.build([3, 5], ["depth"], card.train_ids, ["segmentation", "depth"])
    return submit(Ledger(), street_copy, card, request, "grad_ascent",
                  {"steps": steps, "device": "cpu", "lr": 1e-4}, plugins=list(plugins),
                  out=tmp_path / name)[0]


def _next_job() -> dict:
    huey, _ = queue()
    return huey.dequeue().args[0]


def _wait_for(predicate, what: str, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what}")
        time.sleep(0.1)


def _execute_in_thread(job) -> threading.Thread:
    thread = threading.Thread(target=execute, args=(job,), daemon=True)
    thread.start()
    return thread


def test_a_job_blocked_before_its_first_step_is_stopped_by_cancel(blocking_plugin, street_copy, tmp_path,
                                                                  use_cache, monkeypatch):
    module, folder = blocking_plugin
    monkeypatch.setenv("MTU_JOB_CANCEL_GRACE_SECONDS", "1")
    (folder / "block").write_text("")
    run_id = _submit(street_copy, tmp_path, "blocked", plugins=[module])
    thread = _execute_in_thread(_next_job())
    _wait_for(lambda: (folder / "started").exists(), "the job to start")
    Ledger().cancel(run_id)
    thread.join(timeout=240)
    assert not thread.is_alive()
    row = Ledger().runs(run_id=run_id)[0]
    assert row["status"] == "interrupted" and "cancelled while it was blocked" in row["error"], row
    assert not any(p.name.startswith("blocked") for p in tmp_path.iterdir())


def test_a_cancel_before_the_first_step_is_seen_between_the_set_up_phases(blocking_plugin, street_copy,
                                                                          tmp_path, use_cache):
    module, folder = blocking_plugin
    (folder / "wait").write_text("")
    run_id = _submit(street_copy, tmp_path, "early", plugins=[module])
    thread = _execute_in_thread(_next_job())
    _wait_for(lambda: (folder / "started").exists(), "the job to start")
    Ledger().cancel(run_id)
    (folder / "go").write_text("")  # the plugin returns; the job's next check sees the cancel
    thread.join(timeout=240)
    assert not thread.is_alive()
    row = Ledger().runs(run_id=run_id)[0]
    assert row["status"] == "interrupted", row
    assert "cancelled from the dashboard before step 1" in row["error"], row
    assert Ledger().steps(run_id) == []


def test_a_job_without_progress_is_stopped_as_stalled(blocking_plugin, street_copy, tmp_path, use_cache,
                                                      monkeypatch):
    module, folder = blocking_plugin
    monkeypatch.setenv("MTU_JOB_STALL_SECONDS", "1")
    (folder / "block").write_text("")
    run_id = _submit(street_copy, tmp_path, "stalled", plugins=[module])
    thread = _execute_in_thread(_next_job())
    thread.join(timeout=240)
    assert not thread.is_alive()
    row = Ledger().runs(run_id=run_id)[0]
    assert row["status"] == "interrupted" and "stalled: no progress for 1 s" in row["error"], row


@pytest.mark.parametrize("value", ["soon", "0", "-5", "nan"])
def test_a_bad_stall_limit_is_named_by_the_worker(value, monkeypatch, capsys):
    from core.cli import main

    monkeypatch.setenv("MTU_JOB_STALL_SECONDS", value)
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mtu worker: error: MTU_JOB_STALL_SECONDS") and repr(value) in err, err


def test_the_worker_stops_a_blocked_job_on_cancel_and_runs_the_next(blocking_plugin, street_copy, tmp_path,
                                                                     use_cache):
    module, folder = blocking_plugin
    ledger = Ledger()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MTU_JOB_CANCEL_GRACE_SECONDS": "1"}
    worker = subprocess.Popen([sys.executable, "-m", "core.cli", "worker", "--plugin", module], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: (folder / f"imported-{worker.pid}").exists(), "the worker to load the plugin")
        (folder / "block").write_text("")  # from now on, a job that imports it blocks
        blocked = _submit(street_copy, tmp_path, "blocked", plugins=[module])
        after = _submit(street_copy, tmp_path, "after")
        _wait_for(lambda: (folder / "started").exists(), "the blocked job to start")
        ledger.cancel(blocked)
        _wait_for(lambda: ledger.runs(run_id=after)[0]["status"] in ("done", "failed", "interrupted"),
                  "the next job to end")
        first, second = (ledger.runs(run_id=run)[0] for run in (blocked, after))
        assert first["status"] == "interrupted" and "cancelled while it was blocked" in first["error"]
        assert second["status"] == "done", second
    finally:
        worker.kill()
        worker.wait()


def test_a_job_on_a_data_folder_with_a_fifo_ends_and_the_next_job_runs(street_copy, tmp_path, use_cache,
                                                                       monkeypatch):
    """A FIFO named 0.npy in the dataset folder: refused when the data is opened (a run that
    failed, naming it) or, were it read, stopped by the watchdog; never a run left running."""
    monkeypatch.delenv("MTU_QUEUE")
    folder = tmp_path / "data" / "train" / "image"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "0.npy")
    card = read_card(street_copy)
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    fifo_run = submit(Ledger(), street_copy, card, request, "grad_ascent", {"steps": 2, "device": "cpu"},
                      data_root=str(tmp_path / "data"), out=tmp_path / "fifo")[0]
    after = _submit(street_copy, tmp_path, "after")
    for _ in range(2):
        thread = _execute_in_thread(_next_job())
        thread.join(timeout=240)
        assert not thread.is_alive()
    row = Ledger().runs(run_id=fifo_run)[0]
    assert row["status"] in ("failed", "interrupted"), row
    assert "0.npy" in row["error"] or "stalled" in row["error"], row
    assert Ledger().runs(run_id=after)[0]["status"] == "done"
