"""Run one request end to end: validate, unlearn a copy, summarise before/after, save with lineage.

"Run a method on a request and record the result" is `run_request`, called by `mtu unlearn`, the
dashboard's worker (`core.jobs`) and a benchmark cell (`core.evaluation.compare.run_here`), with an
output policy and observers (progress bar, ledger, the caller's: progress, cancel) for what
differs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from core import distributed
from core.checkpoints import ModelCard, checkpoint_paths, save_checkpoint
from core.ledger import RunCancelled
from core.outputs import check_checkpoint_output, check_folder_writable
from core.requests import ForgetRequest
from core.training import evaluate
from core.unlearning.base import ProgressCallback, ProgressEvent, UnlearningData, UnlearnResult, get_unlearner


def before_after(original: torch.nn.Module, unlearned: torch.nn.Module, request: ForgetRequest,
                 data: UnlearningData) -> list[dict[str, Any]]:
    """Primary metric of each task before and after, on the forget pairs (target tasks), the kept
    pairs (partial mode) and the test part of val. Rows: task, split, metric, before, after."""
    groups = [("forget", data.train, list(request.instances), request.tasks),
              ("kept", data.train, list(request.instances), request.kept_tasks),
              ("test", *data.held_out("test"), request.all_tasks)]
    rows = []
    for split, dataset, ids, tasks in groups:
        if not tasks:
            continue
        before = evaluate(original, dataset, ids, device="cpu")
        after = evaluate(unlearned, dataset, ids, device="cpu")
        for task in tasks:
            metric = dataset.tasks[task].primary
            rows.append({"task": task, "split": split, "metric": metric,
                         "before": before[task][metric], "after": after[task][metric]})
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> str:
    lines = [f"{'task':<14}{'split':<8}{'metric':<10}{'before':>8}{'after':>8}"]
    lines += [f"{r['task']:<14}{r['split']:<8}{r['metric']:<10}{r['before']:>8.4f}{r['after']:>8.4f}"
              for r in rows]
    return "\n".join(lines)


def unlearned_card(card: ModelCard, parent: str, result: UnlearnResult,
                   summary: Sequence[Mapping[str, Any]], reason: str = "") -> ModelCard:
    """The card of an unlearned model: the parent's, plus the request with its `reason` (the
    ticket), method, config and parent."""
    child = copy.deepcopy(card)
    child.parent = parent
    child.created = ""
    child.request = {**result.request.to_dict(), "reason": reason, "method": result.method,
                     "config": result.config, "seconds": round(result.seconds, 3),
                     "extras": result.extras}
    child.metrics = {"before_after": list(summary)}
    return child


def check_output(out: str | Path, parent: str | Path, overwrite: bool = False,
                 store: bool = False) -> None:
    """Refuse, before any work, an output that is the input checkpoint, that exists (unless
    `overwrite`), or whose folder cannot be written (`core.outputs`). With `store`, `out` is a
    content-addressed folder (names come from the weights), so only that it can be written is
    checked."""
    if store:
        check_folder_writable(out, "the results folder")
        return
    check_checkpoint_output(out, checkpoint_paths(parent), overwrite)


Observer = ProgressCallback
"""What `run_request` calls with each step's `ProgressEvent`: the progress bar, the ledger's step
log, a caller's progress display or heartbeat, a cancel check. An observer that raises stops
the run, and the ledger records how (`recorded`)."""


class CancelCheck:
    """The cancel observer of a ledger run: raises `RunCancelled` once `Ledger.cancel(run_id)`
    has been asked, at the next step (as an observer) or at `check(when)` (between the set-up
    phases of a dashboard job)."""

    def __init__(self, ledger, run_id: int, source: str = "the dashboard") -> None:
        self.ledger, self.run_id, self.source = ledger, run_id, source

    def check(self, when: str) -> None:
        if self.ledger.cancel_requested(self.run_id):
            raise RunCancelled(f"cancelled from {self.source} {when}")

    def __call__(self, event: ProgressEvent) -> None:
        self.check(f"at step {event.step}")


@contextmanager
def recorded(ledger, run_id: int | None) -> Iterator[None]:
    """Close the ledger's run `run_id` when the block raises: interrupted for a
    `KeyboardInterrupt` or `RunCancelled`, failed with the error otherwise; a run closed already
    stays as it is (`Ledger.fail_run`), and the exception goes on. No ledger or run: nothing."""
    try:
        yield
    except BaseException as error:
        if ledger is not None and run_id is not None:
            interrupted = isinstance(error, KeyboardInterrupt | RunCancelled)
            ledger.fail_run(run_id, f"{type(error).__name__}: {error}",
                            "interrupted" if interrupted else "failed")
        raise


def _bar_observer(bar) -> Observer:
    def show(event: ProgressEvent) -> None:
        bar.total = event.total
        bar.update(event.step - bar.n)
        bar.set_postfix({f"F/{k}": f"{v:.3f}" for k, v in event.forget_losses.items()})
    return show


def _step_log(ledger, run_id: int) -> Observer:
    def log(event: ProgressEvent) -> None:
        ledger.log_step(run_id, {**event.record(), "total": event.total})
    return log


def run_request(model, card: ModelCard | None, parent: str | Path | None, instances: Sequence[int],
                tasks: Sequence[str] | None, method: str, overrides: Mapping[str, Any] | None,
                out: str | Path | None, show_bar: bool = False, data_root: str | None = None,
                overwrite: bool = False, ledger=None, source: str = "cli", reason: str = "",
                data: UnlearningData | None = None, observers: Sequence[Observer] = (),
                run_id: int | None = None, store: bool = False, summarised: bool = True):
    """Validate and run a request on `model`; save the result to `out` when given. The data is
    `data`, else the card's, or the dataset folder `data_root`. With `store`, `out` is a
    content-addressed folder: the result is saved under its weights' hash there
    (`save_checkpoint`'s "content"), and a result identical to one stored before reuses that
    file. With neither `out` nor a ledger (a benchmark cell, `core.evaluation.compare.run_here`)
    nothing is written or recorded, and `card` and `parent` may be None.

    The output is checked before any work (`check_output`). If another run wrote `out` in the
    meantime, the result goes beside it under a unique name (unless `overwrite`), so neither
    run loses its result; the path returned says where.

    The `reason` (a ticket) goes into the saved card's request. With a `core.ledger.Ledger`, the
    model, the request (with its `source` and `reason`) and the run are recorded before the run
    starts (or, given `run_id`, that queued run is started), every step as it is reported, and
    the outcome (done with the resulting checkpoint, failed with the error, or interrupted when
    cancelled or stopped: `recorded`) when it ends. The result's path, hash and before/after
    rows are recorded just before the checkpoint is renamed into place (`save_checkpoint`'s
    `on_commit`), so a process killed after the rename leaves a run that the ledger's next
    opening marks done (`Ledger.fail_run`).

    Each step's `ProgressEvent` goes to the observers: the progress bar (`show_bar`), the
    ledger's step log, then `observers` in their order (the dashboard job's heartbeat and its
    `CancelCheck`, which stops the run by raising `RunCancelled`). `summarised=False` skips the
    before/after rows (returned empty), which only a saved or recorded result needs.

    Under torchrun (`core.distributed`) every rank runs the request on its share of each batch;
    rank 0 alone checks the output (and every rank stops if it refuses), records the ledger
    row, shows the bar and calls the observers, and writes the checkpoint, after every rank has
    finished the run and the before/after evaluation (a rank that stopped makes that wait fail,
    so nothing is written); the other ranks return None for the weights path.

    Returns (UnlearnResult, weights path or None, before/after rows); the ledger's run id is in
    the result's extras (and so in the saved card) as "ledger_run".
    """
    main = distributed.is_main()
    refusal: Exception | None = None
    if (out is not None or ledger is not None) and (card is None or parent is None):
        refusal = ValueError("a run that is saved or recorded needs the model's card and path")
    elif out is not None and parent is not None and main:
        try:
            check_output(out, parent, overwrite, store)
        except Exception as error:  # raised below, on every rank when several share the run
            refusal = error
    distributed.agree(refusal)
    if not main:
        out, ledger, show_bar, observers = None, None, False, ()
    with recorded(ledger, run_id):  # a queued run that cannot start fails with the reason
        unlearner = get_unlearner(method, overrides)
        if data is None:
            if card is None:
                raise ValueError("run_request needs the model's card or its data")
            data = UnlearningData.from_card(card, data_root=data_root)
        request = ForgetRequest.build(instances, tasks, data.train_ids, list(model.tasks))
    bar = tqdm(total=unlearner.total_steps() or None, desc=method, disable=not show_bar)

    if ledger is None:
        run_id = None
    elif run_id is not None:
        ledger.start_run(run_id)
    else:
        request_id = ledger.add_request(ledger.add_model(parent, card), request, source, reason,
                                        model_path=parent, data_root=data_root)
        run_id = ledger.add_run(request_id, method, unlearner.config.to_dict())
    everyone = [*([_bar_observer(bar)] if show_bar else []),
                *([_step_log(ledger, run_id)] if run_id is not None else []), *observers]

    def report(event: ProgressEvent) -> None:
        for observer in everyone:
            observer(event)

    with recorded(ledger, run_id):
        result = unlearner.run(model, request, data, report)
        bar.close()
        if run_id is not None:
            result.extras["ledger_run"] = run_id
        summary = before_after(model, result.model, request, data) if summarised else []
        distributed.barrier()  # every rank got here: the run is whole and may be written
        weights = child = None
        if out is not None and card is not None:
            child = unlearned_card(card, str(parent), result, summary, reason)
            policy = "content" if store else "overwrite" if overwrite else "beside"
            record = None if run_id is None else (
                lambda path, sha: ledger.record_result(run_id, summary, sha, path))
            weights = save_checkpoint(result.model, child, Path(out) / "result" if store else out,
                                      if_exists=policy, on_commit=record)
    if run_id is not None:
        sha = ledger.add_model(weights, child) if child is not None else None
        ledger.finish_run(run_id, summary, sha, weights)
    return result, weights, summary
