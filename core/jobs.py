"""Runs that outlive the browser tab: the dashboard submits a run as a job to a worker process.

The queue is huey's SqliteHuey, in `queue.sqlite` beside the ledger; `mtu worker` (started by
`mtu app` / `make run` beside Streamlit, stopped with it) takes one job at a time, so runs
submitted together wait their turn. A job carries only plain data (paths, ids, the config); the
ledger holds everything a page shows: status, position in the queue, per-step losses, error,
and the resulting checkpoint. Each job runs in a process of its own, which checks whether it
was cancelled before each set-up phase and between steps; the worker stops that process when a
cancel goes unanswered or no progress comes for a while (`execute`).

With `MTU_QUEUE=immediate` (tests) a job runs at once in the submitting process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from core.ledger import Ledger, checkpoint_names, data_folder, default_path

_QUEUES: dict[tuple[str, bool], Any] = {}

PLUGINS_VARIABLE = "MTU_APP_PLUGINS"
"""The plugin modules `mtu app --plugin` named, comma-separated, for Streamlit and its worker."""


def allowed_plugins() -> list[str]:
    """The plugin modules the dashboard and its worker may import: those named when they were
    started (`mtu app --plugin MODULE` or `mtu worker --plugin MODULE`, in MTU_APP_PLUGINS) and
    the modules of installed packages' entry points (`mtunlearn.architectures`, `mtunlearn.methods`)."""
    from core.plugins import entry_point_modules

    named = [m.strip() for m in os.environ.get(PLUGINS_VARIABLE, "").split(",") if m.strip()]
    return list(dict.fromkeys(named + entry_point_modules()))


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


def needed_plugins(card, plugins: Sequence[str] = ()) -> list[str]:
    """The plugin modules a run of the model with `card` imports: `plugins` (those chosen with
    the model) and the module its card records as the one that registered its architecture.
    Each must be allowed (`allowed_plugins`), else a PluginError names it, says that the model
    needs it and how to allow it; nothing is imported."""
    from core.models import PluginError
    from core.models.registry import normalise_architecture

    recorded = normalise_architecture(card.architecture).get("plugin")
    allowed = allowed_plugins()
    if recorded and recorded not in allowed:
        name = card.architecture.get("name")
        raise PluginError(f"the model's architecture {name!r} comes from the plugin module {recorded!r}, "
                          "which the dashboard's worker may not import (it imports only "
                          f"{', '.join(allowed) or 'none'}): restart it with `mtu app --plugin {recorded}` "
                          "(with the module's folder on PYTHONPATH), or install the package that declares it "
                          "under the mtunlearn.architectures entry point")
    return check_plugins(list(dict.fromkeys([*plugins, *([recorded] if recorded else [])])))


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


ORACLE = "retrain"


def recorded_oracle(ledger: Ledger, model_sha256: str, instances: Sequence[int], tasks: Sequence[str],
                    data_root: str | None = None, config: Mapping[str, Any] | None = None,
                    done_only: bool = True) -> dict[str, Any] | None:
    """The retrain oracle the ledger records for a request's content: a `retrain` run on the
    model with weights `model_sha256`, on a request with the same instances and tasks (in any
    order) and the same dataset folder (`data_root`, None: the card's data), trained with the
    same recipe knobs as `config` asks (`epochs`, `train_seed`; the device does not matter).
    Whichever page, session or command recorded it, one oracle serves every request with that
    content. The newest done run whose result is still on disk, else (unless `done_only`) the
    newest queued or running one that was not cancelled; None when there is none."""
    from dataclasses import fields

    from core.unlearning.retrain import RetrainConfig

    knobs = {f.name: f.default for f in fields(RetrainConfig) if f.name in ("epochs", "train_seed")}
    wanted = {name: int((config or {}).get(name, default)) for name, default in knobs.items()}
    folder, ids, names = data_folder(data_root), set(map(int, instances)), set(tasks)
    done, going = [], []
    for row in ledger.runs(model=model_sha256, method=ORACLE):
        recipe = {name: int(row["config"].get(name, default)) for name, default in knobs.items()}
        if (row["model_sha256"] != model_sha256 or set(row["instances"]) != ids
                or set(row["tasks"]) != names or row["data_root"] != folder or recipe != wanted):
            continue
        if row["status"] == "done" and row["result_path"] and all(
                Path(path).is_file() for path in checkpoint_names(row["result_path"])[::2]):
            done.append(row)
        elif row["status"] in ("queued", "running") and not ledger.cancel_requested(row["run"]):
            going.append(row)
    found = done + ([] if done_only else going)
    return found[0] if found else None


def submit(ledger: Ledger, model_path: str | Path, card, request, method: str,
           config: Mapping[str, Any], *, data_root: str | None = None, plugins: Sequence[str] = (),
           reason: str = "", out: str | Path | None = None, with_oracle: bool = False,
           more: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> list[int]:
    """Record the request and its queued run(s) in the ledger and put them on the queue. A job
    carries the model's path and its weights hash, which the job checks before it runs.
    `more` are further (method, config) runs on the same request, queued after the first (the
    Compare page's methods); their results go where the first one's does (`out`-METHOD when
    `out` is given).

    Every job carries the plugin modules its process imports: `plugins` (chosen with the model),
    the one the model's card records and those the methods come from (`method_plugins`).

    Results go to `out` (the oracle's to `out`-oracle) when given, else into the ledger's
    content-addressed results store (`Ledger.results_folder`), named by their weights' hash, where
    the ledger's row finds them again. Returns the ledger ids of the runs: the method's, those of
    `more`, then the retrain oracle's when asked. A retrain run (`with_oracle`, or `retrain`
    among the methods) whose oracle the ledger records already for the same content
    (`recorded_oracle`: done, or on its way) is not queued again: its id is that run's, and its
    result stays where it is. A run that cannot be put on the queue is marked failed with the
    error (so that no queue position counts it), and the error is raised.
    """
    from core.checkpoints import checkpoint_paths
    from core.models.registry import normalise_architecture
    from core.unlearning.base import method_plugins

    weights = checkpoint_paths(model_path)[0]
    recorded = normalise_architecture(card.architecture).get("plugin")  # the job carries what the
    methods = method_plugins([method, *(name for name, _ in more)])  # model and the methods need
    plugins = list(dict.fromkeys([*plugins, *([recorded] if recorded else []), *methods]))
    sha = ledger.add_model(weights, card)
    request_id = ledger.add_request(sha, request, "dashboard", reason, model_path=weights,
                                    data_root=data_root)
    store = out is None
    out = ledger.results_folder() if store else Path(out)
    jobs = [(method, dict(config), out)]
    jobs += [(name, dict(settings), out if store else Path(f"{out}-{name}")) for name, settings in more]
    if with_oracle:
        oracle_out = out if store else Path(f"{out}-oracle")
        jobs.append((ORACLE, {"device": config.get("device", "auto")}, oracle_out))
    ids = []
    _, task = queue(ledger.path.parent)
    for name, settings, target in jobs:
        oracle = (recorded_oracle(ledger, sha, request.instances, request.tasks, data_root, settings,
                                  done_only=False) if name == ORACLE else None)
        if oracle is not None:  # one oracle per request content: the one recorded serves this one
            ids.append(oracle["run"])
            continue
        run_id = ledger.add_run(request_id, name, settings, status="queued")
        ids.append(run_id)
        try:
            task({"ledger": str(ledger.path), "run": run_id, "model": str(weights), "model_sha256": sha,
                  "data_root": data_root, "plugins": list(plugins), "instances": list(request.instances),
                  "tasks": None if request.mode == "full" else list(request.tasks), "method": name,
                  "config": settings, "out": str(target), "store": store, "reason": reason})
        except BaseException as error:  # not on the queue: no row may wait for it as "queued"
            ledger.fail_run(run_id, f"not queued: {type(error).__name__}: {error}")
            raise
    return ids


STALL_VARIABLE = "MTU_JOB_STALL_SECONDS"
"""A job whose process reports no progress (a set-up phase or a step ended) for this many seconds
is stopped by the worker (default 1800)."""
CANCEL_GRACE_VARIABLE = "MTU_JOB_CANCEL_GRACE_SECONDS"
"""After a cancel, how long the worker waits for the job to stop at its next check before it
stops the job's process (default 30)."""
_POLL_SECONDS = 0.5


def limit_seconds(variable: str, default: float) -> float:
    """The number of seconds in the environment variable `variable` (`default` when unset);
    ValueError naming the variable when it is not a positive number."""
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < float("inf"):
        raise ValueError(f"{variable}={text!r} is not a number of seconds; expected a number > 0, "
                         f"e.g. {default:g}")
    return seconds


class _StartedRun(Ledger):
    """The ledger as a job's own process sees it: the worker started the run already, under the
    worker's pid (so a killed worker leaves the run to be marked interrupted), and it stays so."""

    def start_run(self, run_id: int) -> None:
        pass


def execute(job: Mapping[str, Any]) -> None:
    """Run one job (in the worker): the ledger row goes running, then done / failed /
    interrupted; the result is saved to the job's `out`.

    The work runs in a process of its own (spawned), watched by this one: a job that is
    cancelled and does not stop by itself within MTU_JOB_CANCEL_GRACE_SECONDS (blocked before its
    first step, say, reading a file that never ends) or that reports no progress for
    MTU_JOB_STALL_SECONDS is stopped, its run marked interrupted, and the worker goes on with
    the next job. With MTU_QUEUE=immediate (tests) the work runs in this process."""
    ledger = Ledger(job["ledger"])
    run_id = int(job["run"])
    if ledger.cancel_requested(run_id):
        ledger.fail_run(run_id, "cancelled before it started", "interrupted")
        return
    ledger.start_run(run_id)
    try:
        if os.environ.get("MTU_QUEUE") == "immediate":
            _work(job, ledger, lambda: None)
        else:
            _watch(job, ledger, run_id)
    except Exception as error:  # recorded for the page; the worker goes on with the next job
        if ledger.runs(run_id=run_id)[0]["status"] in ("queued", "running"):
            ledger.fail_run(run_id, f"{type(error).__name__}: {error}")


def _work(job: Mapping[str, Any], ledger: Ledger, beat) -> None:
    """The job itself: plugins, model, data, then the run through `run_request`, whose
    observers are `beat` (progress: each set-up phase and each step) and the run's
    `CancelCheck`, also asked before each set-up phase. Whatever ends the run is recorded in the
    ledger by `runner.recorded` (here for the set-up, in `run_request` for the run)."""
    from core.checkpoints import load_checkpoint, read_card
    from core.models import load_plugins
    from core.unlearning.base import UnlearningData
    from core.unlearning.runner import CancelCheck, recorded, run_request

    run_id = int(job["run"])
    cancel = CancelCheck(ledger, run_id)
    try:
        with recorded(ledger, run_id):
            cancel.check("before step 1 (before loading its plugins)")
            # the plugins chosen with the model and the one its card records (reading a card needs none)
            load_plugins(needed_plugins(read_card(job["model"]), job["plugins"]))
            beat()
            cancel.check("before step 1 (after loading its plugins)")
            model, card = load_checkpoint(job["model"])
            check_identity(job, card.weights_sha256)
            beat()
            cancel.check("before step 1 (after loading the model)")
            data = UnlearningData.from_card(card, data_root=job["data_root"])
            beat()
            cancel.check("before step 1 (after opening the data)")
        run_request(model, card, job["model"], job["instances"], job["tasks"], job["method"],
                    job["config"], job["out"], data_root=job["data_root"], ledger=ledger,
                    run_id=run_id, observers=[lambda event: beat(), cancel],
                    store=bool(job.get("store")), data=data, reason=job.get("reason", ""))
    except Exception:  # recorded in the ledger, where the page reads it
        pass


def check_identity(job: Mapping[str, Any], found: str | None) -> None:
    """Raise ValueError naming the checkpoint when the weights at the job's path (hash `found`)
    are not those the run was queued and recorded on (`job["model_sha256"]`; a job queued before
    it was recorded is not checked)."""
    queued = job.get("model_sha256")
    if queued and found != queued:
        raise ValueError(f"the checkpoint {job['model']} holds other weights (sha256 {str(found)[:16]}...) "
                         f"than the run was queued on ({queued[:16]}...); accepted: the weights it was "
                         "queued on: put them back, or queue the run again")


def _job_process(job: dict[str, Any], beats, worker_pid: int) -> None:
    """The entry point of a job's process: `_work`, counting progress in the shared `beats`;
    it ends itself when the worker that started it is gone."""
    import threading
    import time

    def follow_worker() -> None:
        while os.getppid() == worker_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=follow_worker, daemon=True).start()

    def beat() -> None:
        beats.value += 1

    beat()
    _work(job, _StartedRun(job["ledger"]), beat)


def _watch(job: Mapping[str, Any], ledger: Ledger, run_id: int) -> None:
    """Run `_work` in a spawned process; stop it on a cancel it does not act on, or a stall."""
    import multiprocessing
    import time

    stall = limit_seconds(STALL_VARIABLE, 1800)
    grace = limit_seconds(CANCEL_GRACE_VARIABLE, 30)
    context = multiprocessing.get_context("spawn")
    beats = context.Value("q", 0, lock=False)
    process = context.Process(target=_job_process, args=(dict(job), beats, os.getpid()),
                              name=f"mtu-job-{run_id}", daemon=True)  # ends with the worker
    process.start()
    seen, quiet_since, cancelled_at, stopped = 0, time.monotonic(), None, None
    try:
        while process.exitcode is None and stopped is None:
            process.join(_POLL_SECONDS)
            now = time.monotonic()
            if beats.value != seen:
                seen, quiet_since = beats.value, now
            if cancelled_at is None and ledger.cancel_requested(run_id):
                cancelled_at = now
            if process.exitcode is not None:
                break
            if cancelled_at is not None and now - cancelled_at >= grace:
                stopped = (f"cancelled while it was blocked: it did not stop within {grace:g} s of "
                           "the cancel, so its process was stopped")
            elif now - quiet_since >= stall:
                stopped = (f"stalled: no progress for {stall:g} s ({STALL_VARIABLE}), so its process "
                           "was stopped")
    finally:
        if process.exitcode is None:
            process.kill()
            process.join()
    if ledger.runs(run_id=run_id)[0]["status"] in ("queued", "running"):
        if stopped is not None:
            ledger.fail_run(run_id, stopped, "interrupted")
        else:  # a crash: a signal, the out-of-memory killer
            ledger.fail_run(run_id, f"its process ended with exit code {process.exitcode} before "
                                    "the run did")


def run_worker(home: str | Path | None = None, plugins: Sequence[str] = ()) -> None:
    """The worker process: one job at a time until interrupted; a job may load only `plugins`
    (those it was started with) and the installed entry points."""
    limit_seconds(STALL_VARIABLE, 1800)  # a bad limit is named at start, not at the first job
    limit_seconds(CANCEL_GRACE_VARIABLE, 30)
    os.environ[PLUGINS_VARIABLE] = ",".join(plugins)
    huey, _ = queue(home)
    Ledger(default_path() if home is None else Path(home) / "ledger.sqlite").mark_interrupted()
    huey.create_consumer(workers=1, periodic=False, initial_delay=0.2, max_delay=1.0).run()
