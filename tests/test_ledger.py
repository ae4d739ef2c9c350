import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

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


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip())


def test_a_kill_right_after_the_save_leaves_a_done_run_that_lineage_finds(street_copy, use_cache,
                                                                          tmp_path, capsys):
    """kill -9 of `mtu unlearn` just after the checkpoint's rename: the next open of the ledger
    finds the whole checkpoint the run recorded and marks the run done."""
    out = tmp_path / "killed"
    script = ("import os, signal, sys\n"
              "import core.unlearning.runner as runner\n"
              "save = runner.save_checkpoint\n"
              "def save_then_die(*args, **kwargs):\n"
              "    save(*args, **kwargs)\n"
              "    os.kill(os.getpid(), signal.SIGKILL)\n"
              "runner.save_checkpoint = save_then_die\n"
              "from core.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    process = subprocess.run([sys.executable, "-c", script, "unlearn", "--model", str(street_copy),
                              "--instances", "3", "--method", "grad_ascent", "--set", "steps=1",
                              "--device", "cpu", "--reason", "ticket 7", "--out", str(out)],
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert process.returncode == -9, process.stderr
    row = Ledger().runs()[0]
    card = read_card(out)
    assert row["status"] == "done" and row["error"] == ""
    assert row["result_path"] == f"{out}.safetensors" and row["result_sha256"] == card.weights_sha256
    assert {r["split"] for r in row["metrics"]} == {"forget", "test"}  # the before/after summary
    assert main(["lineage", str(out)]) == 0
    assert "reason: ticket 7" in capsys.readouterr().out


def test_a_dead_run_whose_recorded_result_is_not_whole_is_interrupted(street_copy, tmp_path):
    from core.checkpoints import load_checkpoint, save_checkpoint

    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    model, card = load_checkpoint(street_copy)
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    runs = [ledger.add_run(ledger.add_request(ledger.add_model(street_copy, card), request), "ssd", {})
            for _ in range(3)]
    for run, name in zip(runs, ("whole", "no-card", "altered")):
        save_checkpoint(model, card, tmp_path / name,
                        on_commit=lambda weights, sha, run=run: ledger.record_result(run, [], sha, weights))
    (tmp_path / "no-card.json").unlink()
    (tmp_path / "altered.safetensors").write_bytes(b"not the weights")
    ledger._db.execute("UPDATE runs SET pid = ?", (_dead_pid(),))
    rows = {r["run"]: r for r in Ledger(path).runs()}
    assert rows[runs[0]]["status"] == "done"
    for run in runs[1:]:
        assert rows[run]["status"] == "interrupted" and rows[run]["result_path"] is None
    assert Ledger(path).lineage(card.weights_sha256)[0]["run"] == runs[0]


def test_csv_cells_that_a_spreadsheet_would_run_are_neutralised(street_copy, capsys):
    import csv
    import io

    from core.ledger import ledger_csv

    ledger = Ledger()
    card = read_card(street_copy)
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    reasons = ['=HYPERLINK("http://x","y")', "+1", "-2", "@SUM(A1)", "\tx", "\rx", "ticket 7"]
    for reason in reasons:
        ledger.add_run(ledger.add_request(ledger.add_model(street_copy, card), request, reason=reason),
                       "ssd", {})
    assert main(["history", "--format", "csv"]) == 0
    cli = capsys.readouterr().out
    assert cli == ledger_csv(ledger.runs())
    shown = [row["reason"] for row in csv.DictReader(io.StringIO(cli))][::-1]
    assert shown == [f"'{r}" for r in reasons[:-1]] + ["ticket 7"]
    assert [row["run"] for row in csv.DictReader(io.StringIO(cli))] == ["7", "6", "5", "4", "3", "2", "1"]


def test_the_dashboard_downloads_the_same_neutralised_csv(street_copy, monkeypatch):
    import streamlit
    from streamlit.testing.v1 import AppTest

    from core.ledger import ledger_csv

    ledger = Ledger()
    card = read_card(street_copy)
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    ledger.add_run(ledger.add_request(ledger.add_model(street_copy, card), request,
                                      reason='=HYPERLINK("http://x","y")'), "ssd", {})
    downloads = {}
    monkeypatch.setattr(streamlit, "download_button",
                        lambda label, data, name, *args, **kwargs: downloads.setdefault(name, data))
    page = Path(__file__).resolve().parents[1] / "app" / "pages" / "history.py"
    AppTest.from_file(str(page), default_timeout=900).run()
    assert downloads["ledger.csv"] == ledger_csv(ledger.runs())
    assert "'=HYPERLINK" in downloads["ledger.csv"]


def test_a_byte_identical_copy_never_rewrites_a_past_request(street_copy, tmp_path):
    card = read_card(street_copy)
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(street_copy.with_suffix(".safetensors").read_bytes())
    original = street_copy.with_suffix(".safetensors")
    ledger = Ledger()
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    first = ledger.add_run(ledger.add_request(ledger.add_model(original, card), request,
                                              model_path=original), "ssd", {})
    second = ledger.add_run(ledger.add_request(ledger.add_model(copy, card), request, model_path=copy),
                            "ssd", {})
    paths = {r["run"]: r["model_path"] for r in ledger.runs()}
    assert paths == {first: str(original), second: str(copy)}
    for name in (original, copy, street_copy):
        assert [r["run"] for r in ledger.runs(model=str(name))] == [second, first]


def test_runs_on_a_model_are_found_by_its_weights_whatever_the_path_spelling(street_copy, tmp_path):
    """Issue 19, defect 3: a checkpoint named NAME (the Compare page), NAME.safetensors (the worker)
    or NAME.json is one model, and so are two copies of the same weights; NAME may hold a dot."""
    card = read_card(street_copy)
    dotted = tmp_path / "street-r0.1"
    for suffix in (".json", ".safetensors"):
        Path(f"{dotted}{suffix}").write_bytes(street_copy.with_suffix(suffix).read_bytes())
    ledger = Ledger()
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    bare = ledger.add_run(ledger.add_request(ledger.add_model(dotted, card), request, model_path=dotted),
                          "ssd", {})
    (row,) = ledger.runs()
    assert row["model_path"] == f"{dotted}.safetensors" and row["model_sha256"] == card.weights_sha256
    for spelling in (dotted, f"{dotted}.safetensors", f"{dotted}.json", card.weights_sha256):
        assert [r["run"] for r in ledger.runs(model=str(spelling))] == [bare], spelling
    copy = ledger.add_run(ledger.add_request(ledger.add_model(street_copy, card), request), "ssd", {})
    assert [r["run"] for r in ledger.runs(model=str(dotted))] == [copy, bare]
    assert not ledger.runs(model=str(tmp_path / "street-r0"))  # not the same name without its ".1"


def test_a_version_2_ledger_migrates_and_keeps_its_rows(street_copy, tmp_path):
    from core.ledger import _MIGRATIONS

    path = tmp_path / "v2.sqlite"
    card = read_card(street_copy)
    with sqlite3.connect(path) as db:
        db.executescript(_MIGRATIONS[1] + _MIGRATIONS[2])
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        db.execute("INSERT INTO models VALUES ('abc', '/old/a.safetensors', ?, NULL, '2025-01-01')",
                   (card.to_json(),))
        db.execute("INSERT INTO requests VALUES (1, 'abc', '[3]', '[\"depth\"]', 'partial', 'cli', "
                   "'t', '2025-01-01')")
        db.execute("INSERT INTO runs (id, request_id, method, config, status, host, pid) "
                   "VALUES (1, 1, 'ssd', '{}', 'failed', 'h', 1)")
    db.close()
    ledger = Ledger(path)
    assert ledger.schema_version == SCHEMA_VERSION == 4
    assert ledger.runs()[0]["model_path"] == "/old/a.safetensors"
    assert ledger.runs()[0]["data_root"] is None  # a request of before: the data its card names
    assert [r["run"] for r in ledger.runs(model="/old/a.safetensors")] == [1]
    assert [r["run"] for r in ledger.runs(model="/old/a")] == [1]


def _noise(path):
    """Every page after the first overwritten with noise: reading fails."""
    data = bytearray(path.read_bytes())
    data[4096:] = bytes((i * 37 + 11) % 256 for i in range(len(data) - 4096))
    path.write_bytes(bytes(data))


def _emptied(path):
    """The runs table's page says it holds no row: reading finds nothing, without an error."""
    with sqlite3.connect(path) as db:
        root = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    start = (root - 1) * 4096
    assert data[start] == 13  # a leaf page of a table
    data[start + 3:start + 5] = bytes(2)  # its number of cells
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [_noise, _emptied])
def test_a_corrupted_ledger_is_reported_not_taken_for_an_empty_one(corrupt, street_copy, tmp_path, capsys):
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    card = read_card(street_copy)
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    for i in range(40):
        ledger.add_run(ledger.add_request(ledger.add_model(street_copy, card), request,
                                          reason=f"ticket {i} " + "x" * 40), "ssd", {})
    ledger.close()
    assert path.stat().st_size > 8 * 4096 and not path.with_name("l.sqlite-wal").exists()
    corrupt(path)
    assert main(["history", "--ledger", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "is damaged" in err and str(path) in err and ".recover" in err


def test_a_locked_ledger_is_a_ledger_error_naming_the_file(tmp_path):
    path = tmp_path / "l.sqlite"
    ledger = Ledger(path)
    ledger._db.execute("PRAGMA busy_timeout = 0")  # fail at once instead of waiting 30 s
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(LedgerError, match=f"the ledger {path} cannot be used: database is locked; "
                                              "another process holds it"):
            ledger.add_run(1, "ssd", {})
    finally:
        other.execute("ROLLBACK")
        other.close()
    ledger.close()
    with pytest.raises(LedgerError, match=f"the ledger {path} cannot be used"):
        ledger.runs()
