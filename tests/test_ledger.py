import json
import os
import sqlite3
import subprocess
import sys

import pytest

from core.checkpoints import read_card
from core.cli import main
from core.ledger import SCHEMA_VERSION, Ledger, LedgerError, default_path
from core.requests import ForgetRequest


def test_the_ledger_lives_in_mtu_home(mtu_home, tmp_path):
    assert default_path() == mtu_home / "ledger.sqlite"
    ledger = Ledger()
    assert ledger.path == mtu_home / "ledger.sqlite" and ledger.schema_version == SCHEMA_VERSION
    assert ledger._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_run_is_recorded_from_request_to_result(street_copy, tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    card = read_card(street_copy)
    sha = ledger.add_model(street_copy.with_suffix(".safetensors"), card)
    request = ForgetRequest.build([3, 5], ["depth"], card.train_ids, ["segmentation", "depth"])
    request_id = ledger.add_request(sha, request, "dashboard", "ticket 7")
    run = ledger.add_run(request_id, "grad_ascent", {"lr": 1e-3})
    ledger.log_step(run, {"step": 1, "forget/depth": 0.5})
    assert ledger.runs(status="running")[0]["run"] == run
    ledger.fail_run(run, "boom")
    row = ledger.runs(run_id=run)[0]
    assert row["status"] == "failed" and row["error"] == "boom" and row["reason"] == "ticket 7"
    assert row["instances"] == [3, 5] and row["tasks"] == ["depth"] and row["mode"] == "partial"
    assert ledger.steps(run) == [{"step": 1, "forget/depth": 0.5}]
    assert ledger.runs(model=sha[:10]) and not ledger.runs(model="beef")
    with pytest.raises(LedgerError, match="status 'lost'; accepted: queued, running"):
        ledger.runs(status="lost")
    with pytest.raises(LedgerError, match="not a date"):
        ledger.runs(since="yesterday")


def test_a_run_of_a_dead_process_is_marked_interrupted(street_copy, tmp_path):
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    card = read_card(street_copy)
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    run = ledger.add_run(ledger.add_request(ledger.add_model(street_copy, card), request), "ssd", {})
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    ledger._db.execute("UPDATE runs SET pid = ? WHERE id = ?", (int(dead), run))
    assert Ledger(path).runs(run_id=run)[0]["status"] == "interrupted"


def test_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "l.sqlite"
    Ledger(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LedgerError, match="schema version 99, newer than"):
        Ledger(path)


def test_cli_runs_land_in_history_and_lineage(street_copy, use_cache, capsys):
    first, second = street_copy.with_name("once"), street_copy.with_name("twice")
    assert main(["unlearn", "--model", str(street_copy), "--instances", "3", "--method", "grad_ascent",
                 "--set", "steps=2", "--device", "cpu", "--reason", "ticket 42", "--out", str(first)]) == 0
    assert main(["unlearn", "--model", str(first), "--instances", "5", "--tasks", "depth", "--method",
                 "grad_ascent", "--set", "steps=1", "--device", "cpu", "--out", str(second)]) == 0
    assert main(["unlearn", "--model", str(first), "--instances", "5", "--method", "grad_ascent",
                 "--set", "lr=10", "--set", "steps=40", "--set", "optimizer=sgd", "--device", "cpu",
                 "--out", str(street_copy.with_name("diverged"))]) == 2
    capsys.readouterr()
    assert main(["history", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["failed", "done", "done"]
    assert "diverged at step" in rows[0]["error"]
    assert rows[2]["reason"] == "ticket 42" and rows[2]["source"] == "cli"
    assert rows[1]["result_sha256"] == read_card(second).weights_sha256
    assert main(["history", "--status", "done", "--format", "csv"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # header + 2 rows
    assert main(["history", "--method", "ssd"]) == 0
    assert "no run recorded that matches" in capsys.readouterr().out
    assert main(["lineage", str(second)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"original: {street_copy}.safetensors")
    assert "forget 1 instances [3]" in out[1] and "reason: ticket 42" in out[1]
    assert "partial-task, forget 1 instances [5] on depth" in out[2]
    assert main(["history", "--status", "lost"]) == 2


def test_two_processes_write_one_ledger(street_copy, use_cache, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "core.cli", "unlearn", "--model", str(street_copy), "--instances", "3",
               "--method", "grad_ascent", "--set", "steps=3", "--device", "cpu"]
    processes = [subprocess.Popen([*command, "--out", str(tmp_path / f"out{i}")], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
    assert all(p.wait(timeout=300) == 0 for p in processes), [p.stderr.read() for p in processes]
    rows = Ledger().runs()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"done"}
    assert {r["result_path"] for r in rows} == {str(tmp_path / f"out{i}.safetensors") for i in range(2)}


def test_two_processes_writing_one_out_lose_nothing(street_copy, use_cache, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "core.cli", "unlearn", "--model", str(street_copy), "--instances", "3",
               "--method", "grad_ascent", "--set", "steps=3", "--device", "cpu",
               "--out", str(tmp_path / "same")]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outcomes = [(p.wait(timeout=300), p.stdout.read() + p.stderr.read()) for p in processes]
    assert all(code == 0 or "already exists" in text for code, text in outcomes), outcomes
    done = [row for row in Ledger().runs() if row["status"] == "done"]
    assert len(done) == sum(code == 0 for code, _ in outcomes) >= 1
    assert len({row["result_path"] for row in done}) == len(done)  # one wins the name, one is beside
    for row in done:
        assert read_card(row["result_path"]).weights_sha256 == row["result_sha256"]
