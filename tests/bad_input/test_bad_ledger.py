"""The bad-input catalogue: ledgers that are damaged or not ours, and queue failures. Each is
refused in one line naming the file and what to do, and the file stays byte-identical."""

from __future__ import annotations

import sqlite3

import pytest
from bad_input_helpers import digest

from core.checkpoints import read_card
from core.cli import main
from core.ledger import Ledger
from core.requests import ForgetRequest


def _ledger_with_a_run(path, street_copy) -> Ledger:
    ledger = Ledger(path)
    card = read_card(street_copy)
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    ledger.add_run(ledger.add_request(ledger.add_model(street_copy, card), request), "ssd", {})
    ledger.close()
    return ledger


DAMAGE = {
    "runs dropped": "DROP TABLE runs",
    "runs without its columns": "DROP TABLE runs; CREATE TABLE runs (id INTEGER PRIMARY KEY)",
    "no schema version": "DELETE FROM meta",
    "no meta table": "DROP TABLE meta",
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_ledger_with_damaged_tables_is_refused(damage, street_copy, tmp_path, refused):
    path = tmp_path / "l.sqlite"
    _ledger_with_a_run(path, street_copy)
    with sqlite3.connect(path) as db:
        db.executescript(DAMAGE[damage])
    db.close()
    before = digest(path)
    code = main(["history", "--ledger", str(path)])
    refused("history", code, str(path), "is damaged")
    assert digest(path) == before


def test_a_foreign_database_is_not_taken_for_a_ledger(tmp_path, refused):
    path = tmp_path / "foreign.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices VALUES (1, 9.5)")
    db.close()
    before = digest(path)
    code = main(["history", "--ledger", str(path)])
    refused("history", code, str(path), "is not an mtunlearn ledger", "tables: invoices", "--ledger")
    assert digest(path) == before


def test_a_file_that_is_not_a_database_is_not_taken_for_a_ledger(tmp_path, refused):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    before = digest(path)
    code = main(["history", "--ledger", str(path)])
    refused("history", code, str(path), "is not an mtunlearn ledger", "not an SQLite database")
    assert digest(path) == before


def test_an_empty_file_becomes_a_new_ledger(tmp_path, capsys):
    path = tmp_path / "new.sqlite"
    path.touch()
    assert main(["history", "--ledger", str(path)]) == 0
    assert "no run recorded" in capsys.readouterr().out
    assert Ledger(path).schema_version >= 3


def test_a_corrupted_ledger_is_refused(street_copy, tmp_path, refused):
    path = tmp_path / "l.sqlite"
    _ledger_with_a_run(path, street_copy)
    data = bytearray(path.read_bytes())
    data[4096:] = bytes(len(data) - 4096)  # every page after the first zeroed
    path.write_bytes(bytes(data))
    before = digest(path)
    for command in (["history"], ["history", "--format", "csv"]):
        code = main([*command, "--ledger", str(path)])
        refused("history", code, str(path), "is damaged", ".recover")
    assert digest(path) == before


def test_a_failed_submit_leaves_no_queued_run(street_copy, tmp_path, monkeypatch):
    import core.jobs as jobs

    card = read_card(street_copy)
    request = ForgetRequest.build([3], None, card.train_ids, ["segmentation", "depth"])
    ledger = Ledger()

    def unwritable(job):
        raise OSError(f"queue.sqlite cannot be written (run {job['run']})")

    monkeypatch.setattr(jobs, "queue", lambda home: (None, unwritable))
    with pytest.raises(OSError, match="cannot be written"):
        jobs.submit(ledger, street_copy, card, request, "ssd", {}, with_oracle=True)
    rows = ledger.runs()
    assert len(rows) == 1 and rows[0]["status"] == "failed" and "cannot be written" in rows[0]["error"]
    later = ledger.add_run(rows[0]["request"], "ssd", {}, status="queued")
    assert ledger.queue_position(later) == 1
