"""The ledger: a durable record of every model, deletion request and unlearning run.

Unlearning honours deletion requests, so what was asked, what was done and which checkpoint
resulted must never be lost or ambiguous. The ledger is one SQLite file (standard library
sqlite3, WAL journal, so readers never block the writer and a killed process leaves whole rows
only) shared by the CLI and the dashboard:

    models    a checkpoint by the SHA-256 of its weights: path, card, parent model
    requests  instances, tasks, mode, where it came from (cli / dashboard), a free-text reason
    runs      method, config, status (queued, running, done, failed, interrupted), times,
              error text, metrics, the resulting checkpoint's hash and path
    steps     the per-step losses of a run

Location: `$MTU_HOME/ledger.sqlite` when MTU_HOME is set, else the per-user data folder
(platformdirs, e.g. ~/.local/share/mtunlearn/ledger.sqlite); `Ledger(path)` or `mtu --ledger`
name another. Back it up by copying the file while no run is writing, or with
`sqlite3 ledger.sqlite ".backup copy.sqlite"` at any time.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
STATUSES = ("queued", "running", "done", "failed", "interrupted")
SOURCES = ("cli", "dashboard", "api")

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE models (
        sha256 TEXT PRIMARY KEY,
        path TEXT NOT NULL,
        card TEXT NOT NULL,
        parent_sha256 TEXT,
        added TEXT NOT NULL
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        model_sha256 TEXT NOT NULL REFERENCES models(sha256),
        instances TEXT NOT NULL,
        tasks TEXT NOT NULL,
        mode TEXT NOT NULL,
        source TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        request_id INTEGER NOT NULL REFERENCES requests(id),
        method TEXT NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        started TEXT,
        ended TEXT,
        error TEXT NOT NULL DEFAULT '',
        metrics TEXT NOT NULL DEFAULT '[]',
        result_sha256 TEXT,
        result_path TEXT
    );
    CREATE TABLE steps (
        run_id INTEGER NOT NULL REFERENCES runs(id),
        step INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (run_id, step)
    );
    CREATE INDEX runs_by_status ON runs(status);
    CREATE INDEX requests_by_model ON requests(model_sha256);
    """,
    2: """
    ALTER TABLE runs ADD COLUMN cancel INTEGER NOT NULL DEFAULT 0;
    """,
}


class LedgerError(ValueError):
    """A ledger that cannot be opened or a query with a bad filter."""


class RunCancelled(Exception):
    """A run cancelled by its user (`Ledger.cancel`); it stops between two steps."""


def default_path() -> Path:
    """`$MTU_HOME/ledger.sqlite`, else the per-user data folder's."""
    home = os.environ.get("MTU_HOME")
    if home:
        return Path(home).expanduser() / "ledger.sqlite"
    from platformdirs import user_data_dir

    return Path(user_data_dir("mtunlearn")) / "ledger.sqlite"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Ledger:
    """One ledger file. Every write is one transaction; safe for several processes at once."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._lock = threading.RLock()  # one transaction at a time on this connection
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._migrate()
        except (sqlite3.Error, OSError) as error:
            raise LedgerError(f"the ledger {self.path} cannot be opened: {error}; set MTU_HOME or "
                              "--ledger to a writable place") from error
        self.mark_interrupted()

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def results_folder(self) -> Path:
        """Where runs of the dashboard keep their checkpoints: beside the ledger."""
        return self.path.parent / "results"

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row["value"]) if row else 0
            if version > SCHEMA_VERSION:
                raise LedgerError(f"the ledger {self.path} has schema version {version}, newer than "
                                  f"this mtunlearn's {SCHEMA_VERSION}; upgrade mtunlearn")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0])

    # -- writing --------------------------------------------------------------------------------

    def add_model(self, path: str | Path, card) -> str:
        """Record a checkpoint (by its card's weights hash); returns the hash."""
        sha = card.weights_sha256
        if not sha:
            raise LedgerError(f"checkpoint {path} has no weights hash in its card")
        parent = None
        if card.parent:
            row = self._db.execute("SELECT sha256 FROM models WHERE path = ?", (str(card.parent),)).fetchone()
            parent = row["sha256"] if row else None
        with self._write() as db:
            db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?) ON CONFLICT(sha256) DO UPDATE SET "
                       "path = excluded.path", (sha, str(path), card.to_json(), parent, _now()))
        return sha

    def add_request(self, model_sha256: str, request, source: str = "cli", reason: str = "") -> int:
        if source not in SOURCES:
            raise LedgerError(f"request source {source!r}; accepted: {', '.join(SOURCES)}")
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO requests (model_sha256, instances, tasks, mode, source, reason, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (model_sha256, json.dumps(list(request.instances)), json.dumps(list(request.tasks)),
                 request.mode, source, reason, _now()))
            return int(cursor.lastrowid)

    def add_run(self, request_id: int, method: str, config: Mapping[str, Any],
                status: str = "running") -> int:
        if status not in ("queued", "running"):
            raise LedgerError(f"a new run is queued or running, not {status!r}")
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO runs (request_id, method, config, status, host, pid, started) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (request_id, method, json.dumps(dict(config), default=str), status,
                 socket.gethostname(), os.getpid(), _now() if status == "running" else None))
            return int(cursor.lastrowid)

    def start_run(self, run_id: int) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET status = 'running', started = ?, host = ?, pid = ? WHERE id = ?",
                       (_now(), socket.gethostname(), os.getpid(), run_id))

    def log_step(self, run_id: int, record: Mapping[str, float]) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO steps VALUES (?, ?, ?)",
                       (run_id, int(record["step"]), json.dumps(dict(record), allow_nan=True)))

    def finish_run(self, run_id: int, metrics: Any = (), result_sha256: str | None = None,
                   result_path: str | Path | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET status = 'done', ended = ?, metrics = ?, result_sha256 = ?, "
                       "result_path = ? WHERE id = ?",
                       (_now(), json.dumps(metrics, default=str), result_sha256,
                        None if result_path is None else str(result_path), run_id))

    def fail_run(self, run_id: int, error: str, status: str = "failed") -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET status = ?, ended = ?, error = ? WHERE id = ?",
                       (status, _now(), error, run_id))

    def cancel(self, run_id: int) -> None:
        """Ask a queued or running run to stop (the worker checks between steps)."""
        with self._write() as db:
            db.execute("UPDATE runs SET cancel = 1 WHERE id = ? AND status IN ('queued', 'running')",
                       (run_id,))

    def cancel_requested(self, run_id: int) -> bool:
        row = self._db.execute("SELECT cancel FROM runs WHERE id = ?", (run_id,)).fetchone()
        return bool(row and row["cancel"])

    def queue_position(self, run_id: int) -> int | None:
        """1 for the next queued run, 2 for the one after...; None when not queued."""
        row = self._db.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None or row["status"] != "queued":
            return None
        ahead = self._db.execute("SELECT COUNT(*) FROM runs WHERE status = 'queued' AND id < ?",
                                 (run_id,)).fetchone()[0]
        return int(ahead) + 1

    def mark_interrupted(self) -> int:
        """Runs left "running" by a process of this host that no longer exists become
        "interrupted"; returns how many."""
        rows = self._db.execute("SELECT id, pid FROM runs WHERE status = 'running' AND host = ?",
                                (socket.gethostname(),)).fetchall()
        dead = [row["id"] for row in rows if not _alive(row["pid"])]
        for run_id in dead:
            self.fail_run(run_id, "the process running it ended before it finished", "interrupted")
        return len(dead)

    # -- reading --------------------------------------------------------------------------------

    def runs(self, model: str | None = None, method: str | None = None, status: str | None = None,
             since: str | None = None, run_id: int | None = None) -> list[dict[str, Any]]:
        """Runs with their request and model, newest first. `model` matches a weights hash
        prefix or a checkpoint path; `since` is an ISO date (YYYY-MM-DD...)."""
        if status is not None and status not in STATUSES:
            raise LedgerError(f"status {status!r}; accepted: {', '.join(STATUSES)}")
        if since is not None:
            try:
                datetime.fromisoformat(since)
            except ValueError as error:
                raise LedgerError(f"since {since!r} is not a date like 2026-11-30") from error
        clauses, values = [], []
        if model is not None:
            clauses.append("(m.sha256 LIKE ? OR m.path = ? OR m.path = ?)")
            values += [f"{model}%", model, str(Path(model).with_suffix(".safetensors"))]
        for column, value in (("r.method", method), ("r.status", status), ("r.id", run_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        if since is not None:
            clauses.append("q.created >= ?")
            values.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            "SELECT r.id AS run, q.created, r.status, r.method, q.mode, q.instances, q.tasks, "
            "q.source, q.reason, m.path AS model_path, m.sha256 AS model_sha256, r.started, r.ended, "
            "r.error, r.config, r.metrics, r.result_sha256, r.result_path, q.id AS request "
            "FROM runs r JOIN requests q ON q.id = r.request_id JOIN models m ON m.sha256 = q.model_sha256 "
            f"{where} ORDER BY r.id DESC", values).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            for key in ("instances", "tasks", "config", "metrics"):
                item[key] = json.loads(item[key])
            out.append(item)
        return out

    def steps(self, run_id: int) -> list[dict[str, float]]:
        rows = self._db.execute("SELECT record FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
        return [json.loads(row["record"]) for row in rows]

    def lineage(self, sha256: str) -> list[dict[str, Any]]:
        """The runs that led from an original model to the checkpoint with weights `sha256`,
        oldest first (empty for a model no recorded run produced)."""
        chain, seen = [], set()
        while sha256 and sha256 not in seen:
            seen.add(sha256)
            found = [r for r in self.runs() if r["result_sha256"] == sha256 and r["status"] == "done"]
            if not found:
                break
            chain.append(found[-1])
            sha256 = found[-1]["model_sha256"]
        return chain[::-1]


def record_columns(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a table or CSV: lists joined, config and metrics as JSON text."""
    out = []
    for row in rows:
        out.append({**{k: v for k, v in row.items() if k not in ("config", "metrics")},
                    "instances": ",".join(map(str, row["instances"])), "tasks": ",".join(row["tasks"]),
                    "config": json.dumps(row["config"], sort_keys=True)})
    return out
