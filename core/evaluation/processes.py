"""Jobs in spawned worker processes that stop together: `mtu bench --workers N` and `mtu tune
--workers N` (`in_processes`).

Ctrl-C in a terminal sends SIGINT to every process of it. A `ProcessPoolExecutor` worker hands
the KeyboardInterrupt of its job back as that job's exception and takes the next queued job,
and leaving the executor's `with` block waits for every queued job: an interrupted bench went
on for hours. Here, any exception in the main process while it waits (its own
KeyboardInterrupt, or one a job raised) stops the pool: the queued jobs are cancelled, every
worker is sent SIGTERM, which stops its running job the way Ctrl-C does (`_stop`: a
KeyboardInterrupt, so a claim is given back and a running Optuna trial is marked failed, and a
later resume redoes them at once) and lets it start no other (`_run`); a worker still there
after `STOP_GRACE_S` is killed. Then the exception is raised again.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

from tqdm.auto import tqdm

STOP_GRACE_S = 30.0
"""Seconds the stopped workers have to end their jobs before they are killed."""

_stopping = False
"""In a worker: a stop signal came, so no further job starts."""
_busy = False
"""In a worker: a job is running."""


def _stop(signum: int, frame: Any) -> None:
    """SIGINT or SIGTERM in a worker. The first one stops the running job as Ctrl-C does
    (KeyboardInterrupt), or ends an idle worker quietly; later ones are ignored, so that they do
    not cut that job's clean-up short."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    if _busy:
        raise KeyboardInterrupt(f"stopped by signal {signum}")
    raise SystemExit(0)


def _start(initializer: Callable[..., None] | None, initargs: tuple) -> None:
    """A worker's start: the stop signals' handler, then the caller's initializer."""
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    if initializer is not None:
        initializer(*initargs)


def _run(function: Callable[[Any], Any], job: Any) -> Any:
    """One job in a worker, unless the worker is stopping."""
    global _busy
    if _stopping:
        raise KeyboardInterrupt("this worker is stopping; the job did not start")
    _busy = True
    try:
        return function(job)
    finally:
        _busy = False


def _stop_pool(pool: Any) -> None:
    """Cancel the queued jobs, send every worker SIGTERM, kill those left after `STOP_GRACE_S`,
    and reap them all. Python 3.11's executor has no public handle on its workers (3.14's
    `terminate_workers()` reads the same private `_processes`), so it is read here, before
    `shutdown` forgets it."""
    processes = list((pool._processes or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join()


def in_processes(function: Callable[[Any], Any], jobs: Sequence[Any], workers: int,
                 initializer: Callable[..., None] | None = None, initargs: tuple = (),
                 desc: str | None = None, show_bar: bool = False) -> list[Any]:
    """`function(job)` for every job in `workers` spawned processes, each started with
    `initializer(*initargs)`; the results in the order of `jobs`. `function` and `initializer`
    must be module-level (a spawned process imports them). An exception (Ctrl-C included) stops
    every worker before it is raised again (the module's docstring)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
                               initargs=(initializer, tuple(initargs)))
    try:
        futures = [pool.submit(_run, function, job) for job in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc=desc, disable=not show_bar):
            future.result()
        pool.shutdown()  # Ctrl-C may come while it waits for the workers to end, too
    except BaseException:
        _stop_pool(pool)
        raise
    return [future.result() for future in futures]
