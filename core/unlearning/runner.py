"""Run one request end to end: validate, unlearn a copy, summarise before/after, save with lineage.

Used by `mtu unlearn`; the dashboard and the benchmark call the same pieces.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
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
from core.unlearning.base import UnlearningData, UnlearnResult, get_unlearner


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


def run_request(model, card: ModelCard, parent: str | Path, instances: Sequence[int],
                tasks: Sequence[str] | None, method: str, overrides: Mapping[str, Any] | None,
                out: str | Path | None, show_bar: bool = False, data_root: str | None = None,
                overwrite: bool = False, ledger=None, source: str = "cli", reason: str = "",
                data: UnlearningData | None = None, progress=None, run_id: int | None = None,
                store: bool = False):
    """Validate and run a request on `model`; save the result to `out` when given. The data is
    the card's, or the dataset folder `data_root`. With `store`, `out` is a content-addressed
    folder: the result is saved under its weights' hash there (`save_checkpoint`'s "content"),
    and a result identical to one stored before reuses that file.

    The output is checked before any work (`check_output`). If another run wrote `out` in the
    meantime, the result goes beside it under a unique name (unless `overwrite`), so neither
    run loses its result; the path returned says where.

    The `reason` (a ticket) goes into the saved card's request. With a `core.ledger.Ledger`, the
    model, the request (with its `source` and `reason`) and the run are recorded before the run
    starts (or, given `run_id`, that queued run is started), every step as it is reported, and
    the outcome (done with the resulting checkpoint, failed with the error, or interrupted when
    cancelled or stopped) when it ends. The result's path, hash and before/after rows are
    recorded just before the checkpoint is renamed into place (`save_checkpoint`'s
    `on_commit`), so a process killed after the rename leaves a run that the ledger's next
    opening marks done (`Ledger.fail_run`).

    `data` (default: opened from the card or `data_root`) and `progress` (called with each
    `ProgressEvent`) serve callers that hold them already, such as the dashboard.

    Under torchrun (`core.distributed`) every rank runs the request on its share of each batch;
    rank 0 alone checks the output (and every rank stops if it refuses), records the ledger
    row, shows the bar and calls `progress`, and writes the checkpoint, after every rank has
    finished the run and the before/after evaluation (a rank that stopped makes that wait fail,
    so nothing is written); the other ranks return None for the weights path.

    Returns (UnlearnResult, weights path or None, before/after rows); the ledger's run id is in
    the result's extras (and so in the saved card) as "ledger_run".
    """
    main = distributed.is_main()
    refusal = None
    if out is not None and main:
        try:
            check_output(out, parent, overwrite, store)
        except Exception as error:  # raised below, on every rank when several share the run
            refusal = error
    distributed.agree(refusal)
    if not main:
        out, ledger, show_bar, progress = None, None, False, None
    unlearner = get_unlearner(method, overrides)
    data = data if data is not None else UnlearningData.from_card(card, data_root=data_root)
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

    def report(event):
        bar.total = event.total
        bar.update(event.step - bar.n)
        bar.set_postfix({f"F/{k}": f"{v:.3f}" for k, v in event.forget_losses.items()})
        if run_id is not None:
            ledger.log_step(run_id, {**event.record(), "total": event.total})
        if progress is not None:
            progress(event)

    try:
        result = unlearner.run(model, request, data, report)
        bar.close()
        if run_id is not None:
            result.extras["ledger_run"] = run_id
        summary = before_after(model, result.model, request, data)
        distributed.barrier()  # every rank got here: the run is whole and may be written
        weights = child = None
        if out is not None:
            child = unlearned_card(card, str(parent), result, summary, reason)
            policy = "content" if store else "overwrite" if overwrite else "beside"
            record = None if run_id is None else (
                lambda path, sha: ledger.record_result(run_id, summary, sha, path))
            weights = save_checkpoint(result.model, child, Path(out) / "result" if store else out,
                                      if_exists=policy, on_commit=record)
    except BaseException as error:
        if run_id is not None:
            interrupted = isinstance(error, KeyboardInterrupt | RunCancelled)
            ledger.fail_run(run_id, f"{type(error).__name__}: {error}",
                            "interrupted" if interrupted else "failed")
        raise
    if run_id is not None:
        sha = ledger.add_model(weights, child) if child is not None else None
        ledger.finish_run(run_id, summary, sha, weights)
    return result, weights, summary
