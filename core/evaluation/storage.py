"""Optuna storages that processes and machines share, for `core.evaluation.tuning`'s studies.

`open_storage` opens a database URL (`optuna.storages.RDBStorage`: "sqlite:///studies.db" for
processes of one machine or a shared folder that supports file locks, "postgresql://..." or
"mysql://..." across machines) or a journal file on a shared folder (`HeartbeatJournalStorage`).
Both beat: while a trial runs, its process records a heartbeat every `HEARTBEAT_S` seconds
(Optuna's heartbeat thread, started by `study.optimize`), and a running trial silent for
`GRACE_S` seconds is a killed process's: `optuna.storages.fail_stale_trials` (which
`study.optimize` calls before each trial) marks it failed. Optuna implements heartbeats for its
database storage only; `HeartbeatJournalStorage` gives the journal file the same protocol, its
heartbeat a system attribute of the trial (the process's clock: the machines' clocks must
agree to well within `GRACE_S`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, JournalStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

HEARTBEAT_S = 30
"""Seconds between two heartbeats of a running trial."""
GRACE_S = 300
"""A running trial whose last heartbeat is older than this is failed and run again."""
OPEN_TRIES = 5
"""Attempts at opening a database storage: processes that open a new database at once race to
create its schema, and the losers' first attempt fails (then finds the schema made)."""
OPEN_PAUSE_S = 0.5
"""Seconds between two attempts (times the attempt's number)."""


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage (`JournalStorage` on a `JournalFileBackend` at `path`) with
    Optuna's heartbeat protocol: a running trial's heartbeat is its "heartbeat" system attribute
    (time.time()), and a running trial whose heartbeat, or start when it has none, is older than
    `grace_period` seconds is stale."""

    def __init__(self, path: str | Path, heartbeat_interval: int = HEARTBEAT_S, grace_period: int = GRACE_S):
        super().__init__(JournalFileBackend(str(path)))
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, "heartbeat", time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        return [t._trial_id for t in running if t.datetime_start is not None
                and now - t.system_attrs.get("heartbeat", t.datetime_start.timestamp()) > self.grace_period]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return None


def open_storage(url: str | Path) -> BaseStorage:
    """The shared storage at `url`: a database URL (anything with "://") or a journal file's
    path, with heartbeats every `HEARTBEAT_S` and a grace of `GRACE_S` seconds."""
    text = str(url)
    if "://" in text:
        import sqlalchemy.exc

        for attempt in range(1, OPEN_TRIES + 1):
            try:
                with warnings.catch_warnings():  # the heartbeat arguments are marked experimental
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(text, heartbeat_interval=HEARTBEAT_S,
                                                      grace_period=GRACE_S)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
                if attempt == OPEN_TRIES:  # not a race: a database that cannot be opened
                    raise
                time.sleep(OPEN_PAUSE_S * attempt)
    Path(text).parent.mkdir(parents=True, exist_ok=True)
    return HeartbeatJournalStorage(text, HEARTBEAT_S, GRACE_S)


def counted(trial: FrozenTrial) -> bool:
    """Whether a trial of a shared study uses its budget: it finished with a record (a score or an
    error), or it is running."""
    return "record" in trial.user_attrs or trial.state == TrialState.RUNNING


def stored_records(study: optuna.Study) -> list[dict[str, Any]]:
    """The records of a shared study's finished trials (their "record" user attribute), in
    trial order."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return [dict(t.user_attrs["record"]) for t in trials if "record" in t.user_attrs]
