"""Runs that outlive the browser tab: the dashboard submits a run as a job to a worker process.

The queue is huey's SqliteHuey, in `queue.sqlite` beside the ledger; `mtu worker` (started by
`mtu app` / `make run` beside Streamlit, stopped with it) takes one job at a time, so runs
submitted together wait their turn. A job carries only plain data (paths, ids, the config); the
ledger holds everything a page shows: status, position in the queue, per-step losses, error,
and the resulting checkpoint. A running job checks between steps whether it was cancelled.

With `MTU_QUEUE=immediate` (tests) a job runs at once in the submitting process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.ledger import Ledger, RunCancelled, default_path

_QUEUES: dict[tuple[str, bool], Any] = {}

PLUGINS_VARIABLE = "MTU_APP_PLUGINS"
"""The plugin modules `mtu app --plugin` named, comma-separated, for Streamlit and its worker."""


def allowed_plugins() -> list[str]:
    """The plugin modules the dashboard and its worker may import: those named when they were
    started (`mtu app --plugin MODULE` or `mtu worker --plugin MODULE`, in MTU_APP_PLUGINS) and
    the modules of installed packages' `mtunlearn.architectures` entry points."""
    from importlib.metadata import entry_points

    from core.models import ENTRY_POINT_GROUP

    named = [m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(",") if m.strip()]
    return list(dict.fromkeys(named + [point.module for point in entry_points(group=ENTRY_POINT_GROUP)]))


def check_plugins(modules: Sequence[str]) -> list[str]:
    """`modules` when every one is allowed (`allowed_plugins`), else a PluginError naming the
    first other one and the allowed ones; nothing is imported."""
    from core.models import PluginError

    allowed = allowed_plugins()
    refused = [m for m in modules if m not in allowed]
    if refused:
        raise PluginError(f"plugin module {refused[0]!r} is not allowed here: the dashboard and its worker "
                          f"import only {', '.join(allowed) or 'none'} (named at start-up or installed under "
                          f"an entry point); restart it with `mtu app --plugin {refused[0]}`")
    return list(modules)


def _json_serializer():
    """huey's queue entries as JSON instead of its default pickle, so that the worker never
    unpickles what it reads from `queue.sqlite`. A job is plain data (`submit`); anything else
    (a chained task, a Python object in the arguments) is refused with a TypeError on submit."""
    from datetime import datetime

    from huey.registry import Message
    from huey.serializer import Serializer

    class JsonSerializer(Serializer):
        def _serialize(self, data):
            if not isinstance(data, Message):
                raise TypeError(f"the queue holds jobs only, not {type(data).__name__}")
            fields = data._asdict()
            if fields["on_complete"] is not None or fields["on_error"] is not None:
                raise TypeError("chained tasks are not used by mtunlearn's queue")
            for key in ("eta", "expires_resolved"):
                if isinstance(fields[key], datetime):
                    fields[key] = {"datetime": fields[key].isoformat()}
            return json.dumps(fields, allow_nan=False).encode()

        def _deserialize(self, data):
            fields = json.loads(data)
            for key in ("eta", "expires_resolved"):
                if isinstance(fields[key], dict):
                    fields[key] = datetime.fromisoformat(fields[key]["datetime"])
            fields["args"] = tuple(fields["args"])
            return Message(**fields)

    return JsonSerializer()


def queue(home: str | Path | None = None):
    """(huey, task) for the queue beside the ledger of `home` (default: the ledger's folder)."""
    from huey import SqliteHuey

    folder = Path(home) if home is not None else default_path().parent
    immediate = os.environ.get("MTU_QUEUE") == "immediate"
    key = (str(folder), immediate)
    if key not in _QUEUES:
        folder.mkdir(parents=True, exist_ok=True)
        huey = SqliteHuey("mtunlearn", filename=str(folder / "queue.sqlite"), immediate=immediate,
                          results=False, serializer=_json_serializer())
        _QUEUES[key] = (huey, huey.task(retries=0, name="unlearn")(execute))
    return _QUEUES[key]


def submit(ledger: Ledger, model_path: str | Path, card, request, method: str,
           config: Mapping[str, Any], *, data_root: str | None = None, plugins: Sequence[str] = (),
           reason: str = "", out: str | Path | None = None, with_oracle: bool = False) -> list[int]:
    """Record the request and its queued run(s) in the ledger and put them on the queue.

    Results go to `out` (the oracle's to `out`-oracle) when given, else into the ledger's
    content-addressed results store (`Ledger.results_folder`), named by their weights' hash, where
    the ledger's row finds them again. Returns the ledger ids of the runs: the method's, then the
    retrain oracle's when asked. A run that cannot be put on the queue is marked failed with the
    error (so that no queue position counts it), and the error is raised.
    """
    from core.checkpoints import checkpoint_paths

    weights = checkpoint_paths(model_path)[0]
    request_id = ledger.add_request(ledger.add_model(weights, card), request, "dashboard", reason,
                                    model_path=weights)
    store = out is None
    out = ledger.results_folder() if store else Path(out)
    jobs = [(method, dict(config), out)]
    if with_oracle:
        oracle_out = out if store else Path(f"{out}-oracle")
        jobs.append(("retrain", {"device": config.get("device", "auto")}, oracle_out))
    ids = []
    _, task = queue(ledger.path.parent)
    for name, settings, target in jobs:
        run_id = ledger.add_run(request_id, name, settings, status="queued")
        ids.append(run_id)
        try:
            task({"ledger": str(ledger.path), "run": run_id, "model": str(weights),
                  "data_root": data_root, "plugins": list(plugins), "instances": list(request.instances),
                  "tasks": None if request.mode == "full" else list(request.tasks), "method": name,
                  "config": settings, "out": str(target), "store": store})
        except BaseException as error:  # not on the queue: no row may wait for it as "queued"
            ledger.fail_run(run_id, f"not queued: {type(error).__name__}: {error}")
            raise
    return ids


def execute(job: Mapping[str, Any]) -> None:
    """Run one job (in the worker): the ledger row goes running, then done / failed /
    interrupted; the result is saved to the job's `out`."""
    from core.checkpoints import load_checkpoint
    from core.models import load_plugins
    from core.unlearning.runner import run_request

    ledger = Ledger(job["ledger"])
    run_id = int(job["run"])
    if ledger.cancel_requested(run_id):
        ledger.fail_run(run_id, "cancelled before it started", "interrupted")
        return

    def check(event) -> None:
        if ledger.cancel_requested(run_id):
            raise RunCancelled(f"cancelled from the dashboard at step {event.step}")

    try:
        load_plugins(check_plugins(job["plugins"]))
        model, card = load_checkpoint(job["model"])
        run_request(model, card, job["model"], job["instances"], job["tasks"], job["method"],
                    job["config"], job["out"], data_root=job["data_root"], ledger=ledger,
                    run_id=run_id, progress=check, store=bool(job.get("store")))
    except Exception as error:  # recorded for the page; the worker goes on with the next job
        if ledger.runs(run_id=run_id)[0]["status"] in ("queued", "running"):
            ledger.fail_run(run_id, f"{type(error).__name__}: {error}")


def run_worker(home: str | Path | None = None, plugins: Sequence[str] = ()) -> None:
    """The worker process: one job at a time until interrupted; a job may load only `plugins`
    (those it was started with) and the installed entry points."""
    os.environ[PLUGINS_VARIABLE] = ",".join(plugins)
    huey, _ = queue(home)
    Ledger(default_path() if home is None else Path(home) / "ledger.sqlite").mark_interrupted()
    huey.create_consumer(workers=1, periodic=False, initial_delay=0.2, max_delay=1.0).run()
