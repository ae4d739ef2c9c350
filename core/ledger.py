"""The ledger: a durable record of every model, deletion request and unlearning run.

Unlearning honours deletion requests, so what was asked, what was done and which checkpoint
resulted must never be lost or ambiguous. The ledger is one SQLite file (standard library
sqlite3, WAL journal, so readers never block the writer and a killed process leaves whole rows
only) shared by the CLI and the dashboard:

    models       a checkpoint by the SHA-256 of its weights (its identity): first path, card,
                 parent model
    model_paths  every path a checkpoint was seen under (a byte-identical copy adds a path)
    requests     instances, tasks, mode, the model's path as the request named it, the dataset
                 folder it ran on (NULL: the data its model's card names), where it came from
                 (cli / dashboard), a free-text reason

A checkpoint path is recorded as its weights file, NAME.safetensors, however it was named (NAME,
NAME.safetensors, NAME.json), and a path given to a query matches in any of those spellings, so
the runs on a model are the same whichever page or command recorded them. Rows written before
that keep the spelling they were recorded with, and are found by any spelling as well.
    runs         method, config, status (queued, running, done, failed, interrupted), times,
                 error text, metrics, the resulting checkpoint's hash and path
    steps        the per-step losses of a run

Nothing recorded is rewritten afterwards. A run records its result's path and hash just before
the checkpoint is renamed into place; when its process dies after that, the next opening of the
ledger finds the whole checkpoint and marks the run done (else interrupted). A file that is not a
ledger is refused untouched; a damaged one (`PRAGMA quick_check`) is refused with the command
that recovers what is left.

Location: `$MTU_HOME/ledger.sqlite` when MTU_HOME is set, else the per-user data folder
(platformdirs, e.g. ~/.local/share/mtunlearn/ledger.sqlite); `Ledger(path)` or `mtu --ledger`
name another. Back it up by copying the file while no run is writing, or with
`sqlite3 ledger.sqlite ".backup copy.sqlite"` at any time.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 4
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
    3: """
    ALTER TABLE requests ADD COLUMN model_path TEXT;
    UPDATE requests SET model_path = (SELECT path FROM models WHERE models.sha256 = requests.model_sha256);
    CREATE TABLE model_paths (
        sha256 TEXT NOT NULL REFERENCES models(sha256),
        path TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        PRIMARY KEY (sha256, path)
    );
    INSERT INTO model_paths SELECT sha256, path, added FROM models;
    CREATE INDEX model_paths_by_path ON model_paths(path);
    """,
    4: """
    ALTER TABLE requests ADD COLUMN data_root TEXT;
    """,
}
_SQLITE_HEADER = b"SQLite format 3\x00"


@cache
def _schema() -> dict[str, frozenset[str]]:
    """{table: its columns} of a ledger at SCHEMA_VERSION, from the migrations themselves."""
    db = sqlite3.connect(":memory:")
    try:
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for target in sorted(_MIGRATIONS):
            db.executescript(_MIGRATIONS[target])
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: frozenset(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
                for table in tables}
    finally:
        db.close()


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


def checkpoint_names(path: str | Path) -> tuple[str, str, str]:
    """The spellings of one checkpoint, NAME.safetensors (the one the ledger records), NAME and
    NAME.json; only those two suffixes are taken off, so NAME may hold dots ("indoor-r0.1"). The
    rule of `core.checkpoints.checkpoint_paths`, without importing torch."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    name = path.name
    return str(path.with_name(name + ".safetensors")), str(path), str(path.with_name(name + ".json"))


def data_folder(root: str | Path | None) -> str | None:
    """A dataset folder as the ledger records it: absolute, symbolic links resolved; None (the
    data the model's card names) for None or an empty name."""
    text = str(root or "").strip()
    return str(Path(text).expanduser().resolve()) if text else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _whole_result(path: str | None, sha256: str | None):
    """The card of the checkpoint at `path` when it is whole (card and weights there, both of
    weights `sha256`), else None."""
    if not path or not sha256:
        return None
    # imported here: reading the ledger (`mtu history`) needs no torch
    from core.checkpoints import CheckpointError, check_weights, read_card

    try:
        card = read_card(path)
        if card.weights_sha256 != sha256:
            return None
        check_weights(path, card)
    except (CheckpointError, OSError):
        return None
    return card


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
        except (sqlite3.Error, OSError) as error:
            raise LedgerError(f"the ledger {self.path} cannot be opened: {error}; set MTU_HOME or "
                              "--ledger to a writable place") from error
        self._lock = threading.RLock()  # one transaction at a time on this connection
        self._db.row_factory = sqlite3.Row
        try:
            version = self._recorded_version()  # read only: a file that is not ours stays as it is
            with self._sqlite_errors():
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA foreign_keys=ON")
                self._db.execute("PRAGMA busy_timeout=30000")
            if version < SCHEMA_VERSION:
                self._migrate()
            self._check_tables()
            self.mark_interrupted()
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _sqlite_errors(self) -> Iterator[None]:
        """Any sqlite3 error as a LedgerError that names the file (and says so when it is damaged)."""
        try:
            yield
        except sqlite3.Error as error:
            raise self._failure(error) from error

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._sqlite_errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise

    def _read(self, sql: str, values: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock, self._sqlite_errors():
            return self._db.execute(sql, values).fetchall()

    def _failure(self, error: sqlite3.Error) -> LedgerError:
        try:
            with self.path.open("rb") as handle:
                header = handle.read(len(_SQLITE_HEADER))
        except OSError:
            header = _SQLITE_HEADER
        if header and header != _SQLITE_HEADER:
            return LedgerError(f"{self.path} is not an mtunlearn ledger (not an SQLite database); "
                               "pass another --ledger")
        damage = self._damage()
        if damage is not None:
            return self._damaged(damage)
        if getattr(error, "sqlite_errorname", "").startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            advice = "another process holds it locked; try again when that process has finished"
        else:
            advice = "set MTU_HOME or --ledger to a writable mtunlearn ledger"
        return LedgerError(f"the ledger {self.path} cannot be used: {error}; {advice}")

    def _damage(self) -> str | None:
        """What `PRAGMA quick_check` finds wrong in the file, or None when it is intact (or when
        the check itself cannot run for another reason, such as a lock)."""
        try:
            with self._lock:
                rows = self._db.execute("PRAGMA quick_check(3)").fetchall()
        except sqlite3.Error as error:
            damaged = getattr(error, "sqlite_errorname", "").startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB"))
            return str(error) if damaged else None
        found = "; ".join(str(row[0]) for row in rows)
        return None if found == "ok" else found

    def _damaged(self, detail: str) -> LedgerError:
        return LedgerError(
            f"the ledger {self.path} is damaged ({' '.join(detail.split())[:200]}); restore a backup, "
            f"or recover what is left with `sqlite3 {self.path} \".recover\" | sqlite3 recovered.sqlite` "
            "and pass --ledger recovered.sqlite")

    def results_folder(self) -> Path:
        """Where runs of the dashboard keep their checkpoints: beside the ledger."""
        return self.path.parent / "results"

    def _recorded_version(self) -> int:
        """The file's schema version (0 for an empty file), after refusing a database that is not
        a ledger, a ledger without its version and a newer ledger."""
        tables = sorted(row[0] for row in self._read(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))
        if not tables:
            return 0
        row = (self._read("SELECT value FROM meta WHERE key = 'schema_version'")
               if "meta" in tables else [])
        if not row:
            if set(tables) & set(_schema()):
                raise self._damaged(f"tables {', '.join(tables)} but no schema version")
            raise LedgerError(f"{self.path} is not an mtunlearn ledger (tables: {', '.join(tables)}); "
                              "pass another --ledger")
        try:
            version = int(row[0]["value"])
        except ValueError:
            raise self._damaged(f"schema version {row[0]['value']!r}") from None
        if version > SCHEMA_VERSION:
            raise LedgerError(f"the ledger {self.path} has schema version {version}, newer than "
                              f"this mtunlearn's {SCHEMA_VERSION}; upgrade mtunlearn")
        return version

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            # read again under the write lock: another process may have migrated meanwhile
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row["value"]) if row else 0
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _MIGRATIONS[target].split(";"):
                    if statement.strip():
                        db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                           (str(SCHEMA_VERSION),))

    def _check_tables(self) -> None:
        for table, columns in _schema().items():
            found = {row["name"] for row in self._read(f"PRAGMA table_info({table})")}
            if not found:
                raise self._damaged(f"table {table} is missing")
            if missing := sorted(columns - found):
                raise self._damaged(f"table {table} lacks columns {', '.join(missing)}")

    @property
    def schema_version(self) -> int:
        return int(self._read("SELECT value FROM meta WHERE key = 'schema_version'")[0][0])

    # -- writing --------------------------------------------------------------------------------

    def add_model(self, path: str | Path, card) -> str:
        """Record a checkpoint (by its card's weights hash) and the path it was seen under; a
        model recorded before keeps its row, and the new path is added to its paths. Returns
        the hash."""
        sha = card.weights_sha256
        if not sha:
            raise LedgerError(f"checkpoint {path} has no weights hash in its card")
        weights = checkpoint_names(path)[0]
        with self._write() as db:
            parent = None
            if card.parent:
                row = db.execute("SELECT sha256 FROM model_paths WHERE path IN (?, ?, ?) ORDER BY first_seen "
                                 "DESC, rowid DESC LIMIT 1", checkpoint_names(card.parent)).fetchone()
                parent = row["sha256"] if row else None
            now = _now()
            db.execute("INSERT INTO models VALUES (?, ?, ?, ?, ?) ON CONFLICT(sha256) DO NOTHING",
                       (sha, weights, card.to_json(), parent, now))
            db.execute("INSERT OR IGNORE INTO model_paths VALUES (?, ?, ?)", (sha, weights, now))
        return sha

    def add_request(self, model_sha256: str, request, source: str = "cli", reason: str = "",
                    model_path: str | Path | None = None, data_root: str | Path | None = None) -> int:
        """Record a request on a recorded model; `model_path` is the path the request named, as
        its weights file (default: the model's first recorded path); `data_root` the dataset
        folder it runs on (`data_folder`; None: the data the model's card names)."""
        if source not in SOURCES:
            raise LedgerError(f"request source {source!r}; accepted: {', '.join(SOURCES)}")
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO requests (model_sha256, instances, tasks, mode, source, reason, created, "
                "model_path, data_root) VALUES (?, ?, ?, ?, ?, ?, ?, "
                "COALESCE(?, (SELECT path FROM models WHERE sha256 = ?)), ?)",
                (model_sha256, json.dumps(list(request.instances)), json.dumps(list(request.tasks)),
                 request.mode, source, reason, _now(),
                 None if model_path is None else checkpoint_names(model_path)[0],
                 model_sha256, data_folder(data_root)))
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

    def record_result(self, run_id: int, metrics: Any, result_sha256: str,
                      result_path: str | Path) -> None:
        """Record a running run's result just before its checkpoint is renamed into place
        (`core.checkpoints.save_checkpoint`'s `on_commit`): should the process die after the
        rename, the next opening of the ledger finds the checkpoint and marks the run done."""
        with self._write() as db:
            db.execute("UPDATE runs SET metrics = ?, result_sha256 = ?, result_path = ? "
                       "WHERE id = ? AND status = 'running'",
                       (json.dumps(metrics, default=str), result_sha256, str(result_path), run_id))

    def finish_run(self, run_id: int, metrics: Any = (), result_sha256: str | None = None,
                   result_path: str | Path | None = None) -> None:
        with self._write() as db:
            db.execute("UPDATE runs SET status = 'done', ended = ?, metrics = ?, result_sha256 = ?, "
                       "result_path = ? WHERE id = ?",
                       (_now(), json.dumps(metrics, default=str), result_sha256,
                        None if result_path is None else str(result_path), run_id))

    def fail_run(self, run_id: int, error: str, status: str = "failed") -> None:
        """End a queued or running run as `status` (failed or interrupted) with `error`. A run
        whose recorded result (`record_result`) is whole on disk ended after its checkpoint was
        renamed into place: it becomes done instead, and its result model is recorded."""
        row = self._read("SELECT result_sha256, result_path FROM runs WHERE id = ? "
                         "AND status IN ('queued', 'running')", (run_id,))
        card = _whole_result(row[0]["result_path"], row[0]["result_sha256"]) if row else None
        if card is not None:
            self.add_model(row[0]["result_path"], card)
        with self._write() as db:
            if card is not None:
                db.execute("UPDATE runs SET status = 'done', ended = ? WHERE id = ? "
                           "AND status IN ('queued', 'running')", (_now(), run_id))
            else:
                db.execute("UPDATE runs SET status = ?, ended = ?, error = ?, result_sha256 = NULL, "
                           "result_path = NULL WHERE id = ? AND status IN ('queued', 'running')",
                           (status, _now(), error, run_id))

    def cancel(self, run_id: int) -> None:
        """Ask a queued or running run to stop (the worker checks between steps)."""
        with self._write() as db:
            db.execute("UPDATE runs SET cancel = 1 WHERE id = ? AND status IN ('queued', 'running')",
                       (run_id,))

    def cancel_requested(self, run_id: int) -> bool:
        row = self._read("SELECT cancel FROM runs WHERE id = ?", (run_id,))
        return bool(row and row[0]["cancel"])

    def queue_position(self, run_id: int) -> int | None:
        """1 for the next queued run, 2 for the one after...; None when not queued."""
        row = self._read("SELECT status FROM runs WHERE id = ?", (run_id,))
        if not row or row[0]["status"] != "queued":
            return None
        ahead = self._read("SELECT COUNT(*) FROM runs WHERE status = 'queued' AND id < ?", (run_id,))
        return int(ahead[0][0]) + 1

    def mark_interrupted(self) -> int:
        """Runs left "running" by a process of this host that no longer exists end (`fail_run`):
        done when their recorded result is whole on disk, else "interrupted". Returns how many
        ended."""
        rows = self._read("SELECT id, pid FROM runs WHERE status = 'running' AND host = ?",
                          (socket.gethostname(),))
        dead = [row["id"] for row in rows if not _alive(row["pid"])]
        for run_id in dead:
            self.fail_run(run_id, "the process running it ended before it finished", "interrupted")
        return len(dead)

    # -- reading --------------------------------------------------------------------------------

    def runs(self, model: str | None = None, method: str | None = None, status: str | None = None,
             since: str | None = None, run_id: int | None = None) -> list[dict[str, Any]]:
        """Runs with their request and model, newest first. `model` is a weights hash (or its
        prefix), or a checkpoint path in any spelling (NAME, NAME.safetensors, NAME.json): the
        runs on the weights recorded under that path, whichever path their request named; `since`
        is an ISO date (YYYY-MM-DD...)."""
        if status is not None and status not in STATUSES:
            raise LedgerError(f"status {status!r}; accepted: {', '.join(STATUSES)}")
        if since is not None:
            try:
                datetime.fromisoformat(since)
            except ValueError as error:
                raise LedgerError(f"since {since!r} is not a date like 2026-11-30") from error
        clauses, values = [], []
        if model is not None:
            clauses.append("(m.sha256 LIKE ? OR m.sha256 IN (SELECT sha256 FROM model_paths "
                           "WHERE path IN (?, ?, ?)))")
            values += [f"{model}%", *checkpoint_names(model)]
        for column, value in (("r.method", method), ("r.status", status), ("r.id", run_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                values.append(value)
        if since is not None:
            clauses.append("q.created >= ?")
            values.append(since)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(
            "SELECT r.id AS run, q.created, r.status, r.method, q.mode, q.instances, q.tasks, "
            "q.source, q.reason, COALESCE(q.model_path, m.path) AS model_path, q.data_root, "
            "m.sha256 AS model_sha256, r.started, r.ended, r.error, r.config, r.metrics, "
            "r.result_sha256, r.result_path, q.id AS request "
            "FROM runs r JOIN requests q ON q.id = r.request_id JOIN models m ON m.sha256 = q.model_sha256 "
            f"{where} ORDER BY r.id DESC", values)
        if not rows and (damage := self._damage()) is not None:
            raise self._damaged(damage)  # a damaged page can read as no rows at all
        out = []
        for row in rows:
            item = dict(row)
            for key in ("instances", "tasks", "config", "metrics"):
                item[key] = json.loads(item[key])
            out.append(item)
        return out

    def steps(self, run_id: int) -> list[dict[str, float]]:
        rows = self._read("SELECT record FROM steps WHERE run_id = ? ORDER BY step", (run_id,))
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
    """Rows for a table or CSV: lists joined, config as JSON text (metrics left out)."""
    out = []
    for row in rows:
        out.append({**{k: v for k, v in row.items() if k not in ("config", "metrics")},
                    "instances": ",".join(map(str, row["instances"])), "tasks": ",".join(row["tasks"]),
                    "config": json.dumps(row["config"], sort_keys=True)})
    return out


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """`value` as a spreadsheet shows it as text: a string that a spreadsheet would run as a
    formula (it starts with = + - @, a tab or a carriage return) gets a leading single quote
    (OWASP's advice on CSV injection); anything else is returned as it is."""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def ledger_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Ledger rows (`Ledger.runs`) as CSV text (`record_columns`, every cell `csv_cell`): what
    `mtu history --format csv` prints and the dashboard downloads."""
    table = record_columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(table[0]) if table else ["run"])
    writer.writeheader()
    writer.writerows({key: csv_cell(value) for key, value in row.items()} for row in table)
    return buffer.getvalue()
