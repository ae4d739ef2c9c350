"""Tuning with equal budgets: every method, ours included, gets the same number of trials over
its own declared search space (`core.unlearning.search`), each trial scored by UIS on the
held-out tuning part of the val split, never on its test part.

A study tunes one method on one or more forget requests; a trial's score is the mean UIS v2
over them (`core.evaluation.uis.uis2`, `compare_models(..., heldout="tuning")`, no attack),
referenced to each request's retrain oracle when the study is given them, else to the original.
The search is Optuna's TPE sampler with a seed of its own per study (`study_seed`: no two
studies start from the same configurations): its first `startup_trials(trials)` trials are
drawn at random from the space, the rest from TPE's model of the trials so far. The record keeps
the best-so-far curve (`best_so_far`) and flags a study still improving at its end
(`still_improving`). A trial whose run diverges (`DivergenceError`) or whose
score is not finite counts as a failed trial of the budget.

Edges widen: after the budget, when the best trial's value of a numeric knob lies within the
outer `EDGE` of its range (5%, on the range's sampling scale, log for a log range), that range
grows on that side by half its width (within the knob's allowed range) and `widen_trials(trials)`
more trials search the widened space, with TPE reading every trial so far; up to
`MAX_WIDENINGS` times. The same rule holds for every method; its extra trials are counted in
the record (`extra_trials`) and shown in the report.

Shared studies: given an Optuna `storage` (`core.evaluation.storage.open_storage`: a journal
file on a shared folder, or a database URL) and a stable `study_name`, a study lives in the
storage, so several processes and machines can run it and a killed one's work is kept. Each
trial's record goes into its user attributes and every process rebuilds the records from the
storage. The budget stays exact: a trial runs only while fewer than its round's budget of
trials with a smaller number are finished or running (a trial started over it fails before it
draws a configuration and stops its process's search); a round's widening is decided once all
its trials have finished, by every process from the same trials. A trial whose process stopped
beating (Optuna's heartbeat, `core.evaluation.storage`) is marked failed and not counted, so it
is run again. A study run by one process at a time gives the in-memory record; one that
processes run side by side keeps its budget but not its configurations (TPE reads the trials
finished when each one starts), so `mtu bench` claims each study for one process.

`tune_checkpoint` (the `mtu tune` command) tunes every method for each mode of a trained
checkpoint and writes the choices as the dashboard's starting settings (`tuned.json` beside
the checkpoint); `tuned_settings` reads them back.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, cast

import pandas as pd
import torch

from core.evaluation.compare import compare_models, run_here
from core.outputs import check_settings_output, write_text_atomic
from core.plugins import load_plugins
from core.requests import ForgetRequest
from core.unlearning.base import (
    DivergenceError,
    UnlearningData,
    list_unlearners,
    method_plugins,
)
from core.unlearning.search import Choice, Dimension, Range, describe, limits, search_space

RESCORE_TOP = 4
"""Configurations of a study's search that are scored again on the further tuning draws."""
EDGE = 0.05
"""A chosen value this close to an end of its range (share of the range, sampling scale) widens it."""
MAX_WIDENINGS = 2
"""Most widening rounds per study."""
ORACLE = "retrain"
SCORED_ON = "tuning"
"""The part of the val split every trial is scored on (`core.data.split_val`)."""
SCORE = "uis2"
"""The leaderboard column a trial minimises: UIS v2 (benchmarks/DECISIONS.md section 10)."""
POLL_S = 5.0
"""Seconds between two looks at a shared study whose last trials other processes are running."""


def study_seed(seed: int, *names: str) -> int:
    """The sampler seed of one study: the tuning `seed` mixed with the study's names (benchmark,
    mode, method, ...) by CRC-32, so each (method, study) starts from its own random trials and
    the same names give the same seed on every machine."""
    return zlib.crc32("|".join([str(seed), *names]).encode()) % 2**31


def best_so_far(record: Mapping[str, Any]) -> list[float | None]:
    """The best score after each trial of a `tune` record, in trial order (None until a trial
    has succeeded)."""
    best: float | None = None
    curve = []
    for trial in record["trials"]:
        if trial["uis"] is not None and (best is None or trial["uis"] < best):
            best = trial["uis"]
        curve.append(best)
    return curve


def still_improving(record: Mapping[str, Any]) -> bool:
    """Whether the study's final best came in its last quarter of trials (at least its last 2):
    a curve that has not flattened, so more trials might still find a better configuration. A
    study with no successful trial is not improving; one with too few trials to tell is."""
    curve = best_so_far(record)
    if not curve or curve[-1] is None:
        return False
    tail = max(2, len(curve) // 4)
    before = curve[-tail - 1] if len(curve) > tail else None
    return before is None or curve[-1] < before


def plateaued(record: Mapping[str, Any], floor: float) -> bool:
    """Whether the study's best-so-far improved by less than `floor` over its last quarter of
    trials (at least its last 2): below the retrain-vs-retrain floor a lower best is mostly a
    luckier draw of the score's noise, so a curve that gains less than that has flattened
    (benchmarks/DECISIONS.md section 14). False with no successful trial before the last
    quarter (too few to tell)."""
    curve = best_so_far(record)
    if not curve or curve[-1] is None:
        return False
    tail = max(2, len(curve) // 4)
    before = curve[-tail - 1] if len(curve) > tail else None
    return before is not None and before - curve[-1] < floor


def startup_trials(trials: int) -> int:
    """Random trials before TPE's model takes over: half the budget, at least 2."""
    return max(2, trials // 2)


def widen_trials(trials: int) -> int:
    """Extra trials of one widening round: half the budget, at least 2."""
    return max(2, trials // 2)


def tunable_methods() -> list[str]:
    """Every registered method except the retrain oracle (which has nothing to tune)."""
    return [m for m in list_unlearners() if m != ORACLE]


def _suggest(trial, name: str, dimension: Dimension) -> Any:
    if isinstance(dimension, Choice):
        return trial.suggest_categorical(name, list(dimension.options))
    if dimension.integer:
        return trial.suggest_int(name, int(dimension.low), int(dimension.high), log=dimension.log)
    return trial.suggest_float(name, float(dimension.low), float(dimension.high), log=dimension.log)


def score_config(method: str, config: Mapping[str, Any], model: torch.nn.Module,
                 requests: Sequence[ForgetRequest], data: UnlearningData, retain_sample: int = 64,
                 seed: int = 0, oracles: Sequence[torch.nn.Module] | None = None) -> tuple[float, float]:
    """(mean UIS v2 over `requests` on the tuning part of val, unlearning seconds) of one config;
    each request's score is referenced to its oracle (`oracles`, in the order of `requests`)
    when given, else to the original."""
    scores, seconds = [], 0.0
    for index, request in enumerate(requests):
        unlearned, took = run_here(model, request, data)(method, config)  # the one run path
        models = {"original": model, method: unlearned}
        if oracles:
            models[ORACLE] = oracles[index]
        board = compare_models(models, request, data, retain_sample=retain_sample, seed=seed, mia=False,
                               heldout=SCORED_ON).leaderboard
        scores.append(float(board.set_index("model").at[method, SCORE]))
        seconds += took
    return float(sum(scores) / len(scores)), seconds


class _OverBudget(Exception):
    """A trial of a shared study started once its round's budget was taken: failed unrun."""


def _open_study(storage: Any, study_name: str | None, sampler_seed: int, startup: int):
    """A minimising study with TPE seeded by `sampler_seed`: in memory, or in `storage` under
    `study_name` (created, or loaded when it exists). A process that joins a stored study
    already holding trials (another process's, or a killed one's on resume) seeds its sampler
    with (`sampler_seed`, that count), so it does not draw the first process's configurations
    again."""
    import optuna

    def sampler(seed: int):
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)

    if storage is None:
        return optuna.create_study(direction="minimize", sampler=sampler(sampler_seed))
    study = optuna.create_study(direction="minimize", sampler=sampler(sampler_seed), storage=storage,
                                study_name=study_name, load_if_exists=True)
    held = len(study.get_trials(deepcopy=False))
    if held:
        study = optuna.load_study(study_name=study_name, storage=storage,
                                  sampler=sampler(study_seed(sampler_seed, "joined", str(held))))
    return study


def _shared_round(study, objective: Callable, total: int) -> None:
    """Run a shared study until `total` of its trials have finished, other processes' included:
    this process runs trials while fewer than `total` are finished or running, and otherwise
    waits for the running ones, failing those whose process stopped beating."""
    import warnings

    import optuna

    from core.evaluation.storage import counted

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        if sum("record" in t.user_attrs for t in trials) >= total:
            return
        free = total - sum(counted(t) for t in trials)
        if free > 0:
            study.optimize(objective, n_trials=free, catch=(_OverBudget,))
        else:
            time.sleep(POLL_S)


Draw = tuple[Sequence[ForgetRequest], Sequence[torch.nn.Module] | None]
"""One further tuning draw: its requests (the same settings as the search's, other forget
instances) and their oracles (None: scored against the original)."""


def _draw_scores(method: str, config: Mapping[str, Any], model: torch.nn.Module, draws: Sequence[Draw],
                 data: UnlearningData, retain_sample: int, seed: int) -> list[float]:
    """`score_config` of one configuration on each further draw; NaN for a run that diverges."""
    found = []
    for requests, oracles in draws:
        try:
            found.append(score_config(method, config, model, requests, data, retain_sample, seed, oracles)[0])
        except DivergenceError:
            found.append(math.nan)
    return found


def tune(method: str, model: torch.nn.Module, requests: Sequence[ForgetRequest], data: UnlearningData,
         trials: int, seed: int = 0, retain_sample: int = 64,
         log: Callable[[str], None] | None = None, sampler_seed: int | None = None,
         oracles: Sequence[torch.nn.Module] | None = None, rescore: Sequence[Draw] = (),
         top: int = RESCORE_TOP, rescore_at: Sequence[int] = (), storage: Any = None,
         study_name: str | None = None) -> dict[str, Any]:
    """Tune `method` on `requests` (all of one mode) with `trials` trials, plus the widening rounds.

    Args:
        method: a registered method with a `search_space`.
        model: the trained model; requests: forget requests of one mode (full or partial), every
            trial runs and scores all of them (the mean is its score).
        data: the full `UnlearningData` (its tuning part scores the trials).
        trials: the budget, the same for every method.
        seed: the tuning seed: every run's seed (and the sampler's when `sampler_seed` is None).
        retain_sample: size of the fixed retain sample ILI and UIS v2's retain term are read on.
        sampler_seed: the sampler's seed (`study_seed` gives one per study).
        oracles: the retrain oracle of each request (same order), the reference of UIS v2.
        rescore: further tuning draws (`Draw`). When given, the search's `top` best distinct
            configurations are scored again on every draw, and the one with the lowest mean
            over all draws (the search's score included) is chosen: a best-of-N on one noisy
            draw picks the luckiest configuration (benchmarks/DECISIONS.md section 14).
        rescore_at: earlier budgets at which the same re-scoring is also read (the top
            configurations among the trials up to each), for the plateau study; recorded only.
        storage: an Optuna storage that processes share (`core.evaluation.storage.open_storage`);
            None: the study lives in this process's memory.
        study_name: the study's name in `storage`, the same in every process that runs it
            (e.g. its benchmark, mode, tuning seed and method); required with a storage.
    Returns:
        A JSON-ready record: method, mode, seed, sampler_seed, requests (how many), score (what a
        trial's "uis" is), scored_on, budget, extra_trials, failed, rounds (each with its search
        space and trial count), widened (knob -> [first range, last range]), trials (number,
        round, params, uis (the trial's score) or None, error, seconds, run_seconds), chosen (the
        best trial's params; {} when every trial failed), best_uis (its score), best_so_far (the
        curve), still_improving, seconds. With `rescore`: draws (how many), best_trial_uis (the
        search's best score), rescored ([{number, params, scores (one per draw), mean}], the
        top configurations), chosen and best_uis from the lowest mean; with `rescore_at`:
        rescored_at {budget: {rescored, chosen_number, mean}}.
    """
    import optuna  # here and below, not at the top: the dashboard imports this module

    from core.evaluation.storage import counted, stored_records

    if trials < 1:
        raise ValueError(f"trials must be at least 1, got {trials}")
    for these, their_oracles in [(requests, oracles), *rescore]:
        if their_oracles is not None and len(their_oracles) != len(these):
            raise ValueError(f"{len(their_oracles)} oracles for {len(these)} requests; pass one per request")
    sampler_seed = seed if sampler_seed is None else sampler_seed
    modes = {request.mode for request in requests}
    if len(modes) != 1:
        raise ValueError(f"the requests of one study must share one mode; got {sorted(modes)}")
    mode = modes.pop()
    space = search_space(method, mode)
    first = dict(space)
    if storage is not None and not study_name:
        raise ValueError("a study in a shared storage needs a study_name, the same in every process "
                         "(e.g. benchmark__mode__s<tuning seed>__method)")
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = _open_study(storage, study_name, sampler_seed, startup_trials(trials))
    records: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    total = [trials]  # the trials the study holds once this round is over (budget plus widenings)
    start = time.perf_counter()

    def objective(trial) -> float:
        if storage is not None and sum(counted(t) for t in study.get_trials(deepcopy=False)
                                       if t.number < trial.number) >= total[0]:
            study.stop()
            raise _OverBudget(f"trial {trial.number} is over the round's budget of {total[0]} trials")
        params = {name: _suggest(trial, name, dimension) for name, dimension in space.items()}
        began = time.perf_counter()
        record = {"number": trial.number, "round": len(rounds) - 1, "params": params}
        try:
            uis, run_seconds = score_config(method, {**params, "seed": seed}, model, requests, data,
                                            retain_sample, seed, oracles)
            record.update(uis=uis if math.isfinite(uis) else None, run_seconds=round(run_seconds, 3),
                          **({} if math.isfinite(uis) else {"error": "the UIS is not finite"}))
        except DivergenceError as error:
            uis = math.nan
            record.update(uis=None, error=str(error))
        record["seconds"] = round(time.perf_counter() - began, 3)
        if storage is None:
            records.append(record)
        else:
            trial.set_user_attr("record", record)
        if log:
            log(f"{method} {mode} trial {trial.number}: UIS {record['uis']}")
        return uis

    try:
        budget = trials
        while True:
            rounds.append({"space": describe(space), "trials": budget})
            if storage is None:
                study.optimize(objective, n_trials=budget)
            else:
                total[0] = trials + (len(rounds) - 1) * widen_trials(trials)
                _shared_round(study, objective, total[0])
                records = stored_records(study)[:total[0]]  # on a resume, later rounds are there too
            done = [r for r in records if r["uis"] is not None]
            if not done or len(rounds) > MAX_WIDENINGS:
                break
            best = min(done, key=lambda r: r["uis"])["params"]
            candidates = {name: dimension.widened(best[name], limits(method, name), EDGE)
                          for name, dimension in space.items() if isinstance(dimension, Range)}
            grown = {name: dimension for name, dimension in candidates.items() if dimension is not None}
            if not grown:
                break
            space = {**space, **grown}
            budget = widen_trials(trials)
    finally:
        optuna.logging.set_verbosity(verbosity)
    done = [r for r in records if r["uis"] is not None]
    best = min(done, key=lambda r: r["uis"]) if done else None
    again: dict[str, Any] = {}
    if rescore and done:
        scores: dict[int, list[float]] = {}

        position = {r["number"]: index for index, r in enumerate(records)}  # numbers skip failed stale trials

        def rescored(budget: int) -> list[dict[str, Any]]:
            ranked = sorted((r for r in done if position[r["number"]] < budget), key=lambda r: r["uis"])
            distinct = list({json.dumps(r["params"], sort_keys=True): r for r in reversed(ranked)}.values())
            entries = []
            for trial in sorted(distinct, key=lambda r: r["uis"])[:top]:
                if trial["number"] not in scores:
                    scores[trial["number"]] = [trial["uis"], *_draw_scores(
                        method, {**trial["params"], "seed": seed}, model, rescore, data, retain_sample, seed)]
                found = scores[trial["number"]]
                mean = float(sum(found) / len(found))
                entries.append({"number": trial["number"], "params": trial["params"],
                                "scores": [x if math.isfinite(x) else None for x in found],
                                "mean": mean if math.isfinite(mean) else None})
            return entries

        def pick(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
            finite = [e for e in entries if e["mean"] is not None]
            return min(finite, key=lambda e: e["mean"]) if finite else None

        at = {}
        for budget in sorted(set(rescore_at)):
            entries = rescored(budget)
            chosen = pick(entries)
            at[str(budget)] = {"rescored": entries, "chosen_number": chosen and chosen["number"],
                               "mean": chosen and chosen["mean"]}
        entries = rescored(len(records))
        chosen = pick(entries)
        again = {"draws": 1 + len(rescore), "best_trial_uis": best["uis"] if best else None,
                 "rescored": entries, **({"rescored_at": at} if rescore_at else {})}
        if chosen is not None:
            best = {"params": chosen["params"], "uis": chosen["mean"]}
    widened = {name: [first[name].to_dict(), space[name].to_dict()] for name in space
                if space[name] != first[name]}
    record = {"method": method, "mode": mode, "seed": seed, "sampler_seed": sampler_seed,
              "requests": len(requests),
              "score": f"mean {SCORE} over the requests, against "
                       + ("each request's retrain oracle" if oracles else "the original (no oracle)"),
              "scored_on": SCORED_ON,
              "sampler": f"optuna TPESampler(seed={sampler_seed}, n_startup_trials={startup_trials(trials)})",
              "budget": trials, "extra_trials": len(records) - trials,
              "failed": sum(r["uis"] is None for r in records), "rounds": rounds, "widened": widened,
              "trials": records, "chosen": dict(best["params"]) if best else {},
              "best_uis": best["uis"] if best else None, **again,
              "seconds": round(time.perf_counter() - start, 3)}
    record["best_so_far"] = best_so_far(record)
    record["still_improving"] = still_improving(record)
    return record


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def format_config(config: Mapping[str, Any]) -> str:
    """A config as "name=value, ..." with floats to 3 significant digits."""
    return ", ".join(f"{k}={_format_value(v)}" for k, v in config.items())


def _format_range(dimension: Mapping[str, Any]) -> str:
    return f"{_format_value(dimension['low'])}..{_format_value(dimension['high'])}"


TUNING_COLUMNS = ["benchmark", "mode", "requests", "draws", "method", "sampler_seed", "trials",
                  "extra_trials", "failed", "best_uis", "still_improving", "floor", "plateaued", "chosen",
                  "widened", "seconds"]


def tuning_table(records: Sequence[Mapping[str, Any]],
                 floors: Mapping[tuple[Any, str], float] | None = None) -> pd.DataFrame:
    """One row per study: where it was tuned (benchmark, when the record has it; mode; requests
    scored per trial; draws its choice was scored on), method, sampler_seed, trials (budget +
    extra), extra_trials, failed, best_uis (the chosen configuration's score: its mean over the
    draws when re-scored), still_improving, the (benchmark, mode)'s tuning floor from `floors`
    and whether the study `plateaued` against it (NaN without a floor), the chosen config as
    text, the widened ranges as text ("no" when none), seconds."""
    rows = []
    for record in records:
        floor = (floors or {}).get((record.get("benchmark"), record["mode"]), math.nan)
        widened = "; ".join(f"{name} {_format_range(a)} -> {_format_range(b)}"
                            for name, (a, b) in record["widened"].items())
        rows.append({"benchmark": record.get("benchmark"), "mode": record["mode"],
                     "requests": record.get("requests", 1), "draws": record.get("draws", 1),
                     "method": record["method"],
                     "sampler_seed": record.get("sampler_seed", record.get("seed")),
                     "trials": len(record["trials"]), "extra_trials": record["extra_trials"],
                     "failed": record["failed"],
                     "best_uis": math.nan if record["best_uis"] is None else record["best_uis"],
                     "still_improving": still_improving(record), "floor": floor,
                     "plateaued": math.nan if math.isnan(floor) else plateaued(record, floor),
                     "chosen": format_config(record["chosen"]) or "defaults (every trial failed)",
                     "widened": widened or "no", "seconds": record["seconds"]})
    return pd.DataFrame(rows, columns=TUNING_COLUMNS)


# -- the dashboard's starting settings ----------------------------------------------------------
TUNED_FILE = "tuned.json"


def mode_requests(instances: Sequence[int], train_ids: Sequence[int], tasks: Sequence[str],
                  mode: str) -> list[ForgetRequest]:
    """The requests a mode is tuned on: full = one request on every task; partial = one request
    per task (forget that task, keep the others), the same instances."""
    if mode == "full":
        return [ForgetRequest.build(instances, None, train_ids, tasks)]
    return [ForgetRequest.build(instances, [task], train_ids, tasks) for task in tasks]


def tune_checkpoint(path: str | Path, trials: int, out: str | Path | None = None,
                    methods: Sequence[str] | None = None, ratio: float = 0.01, seed: int = 0,
                    retain_sample: int = 64, command: str = "", data_root: str | None = None,
                    log: Callable[[str], None] = print, workers: int = 1,
                    storage: str | None = None) -> dict[str, Any]:
    """Tune every method (or `methods`) for both modes of the checkpoint at `path` and merge the
    choices into `out` (default: tuned.json beside the checkpoint) under the checkpoint's name.

    The forget set: round(ratio x training instances) (at least 1) drawn by `seed`; full mode is
    tuned on one request over every task, partial mode on one request per task (the mean UIS
    over them), each trial scored by UIS v2 against the original (a checkpoint has no oracle) on
    the tuning part of the val split, each study with its own sampler seed (`study_seed`). The
    (mode, method) studies run in `workers` processes, each with its share of torch's threads.
    `storage`: the URL of an Optuna storage (`core.evaluation.storage.open_storage`) that several
    invocations with the same checkpoint, options and `out` share: each study lives there under
    `checkpoint_study_name` and is run by the invocation that claims it in the folder
    `<out>.claims` (`core.evaluation.claims`), the others wait for it and read its record back,
    so together they run each study's budget once and every one writes the same choices.
    Returns the entry written:
    {"command", "date", "seconds", "trials", "seed", "ratio", "instances", "scored_on", "modes":
    {mode: {method: config}}, "best_uis": {mode: {method: uis}}, "extra_trials", "widened"}.
    """
    from core.checkpoints import checkpoint_paths, load_checkpoint
    from core.evaluation.benchmark import forget_instances

    weights = checkpoint_paths(path)[0]
    out = Path(out) if out else weights.parent / TUNED_FILE
    check_settings_output(out, checkpoint_paths(path))
    model, card = load_checkpoint(path)
    data = UnlearningData.from_card(card, data_root=data_root)
    instances = forget_instances(card.train_ids, ratio, seed)
    tasks = list(model.tasks)
    start = time.perf_counter()
    entry: dict[str, Any] = {"command": command, "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
                             "trials": trials, "seed": seed, "ratio": ratio, "instances": instances,
                             "scored_on": "mean UIS over the mode's requests on the tuning part of "
                                          "the val split (never its test part)",
                             "modes": {}, "best_uis": {}, "extra_trials": {}, "widened": {}}
    studies = [(mode, method) for mode in ("full", "partial") for method in methods or tunable_methods()]
    jobs = [(method, mode_requests(instances, card.train_ids, tasks, mode),
             study_seed(seed, weights.stem, mode, method),
             checkpoint_study_name(weights.stem, card.weights_sha256, mode, method, trials, ratio, seed,
                                   retain_sample)) for mode, method in studies]
    folder = out.with_name(f"{out.name}.claims") if storage else None
    for (mode, method), record in zip(studies, _in_processes(
            model, data, jobs, trials, seed, retain_sample, workers, storage, folder)):
        log(f"{weights.stem} {mode} {method}: best UIS {record['best_uis']} "
            f"({len(record['trials'])} trials, {record['seconds']:.0f} s)")
        entry["modes"].setdefault(mode, {})[method] = record["chosen"]
        entry["best_uis"].setdefault(mode, {})[method] = record["best_uis"]
        entry["extra_trials"].setdefault(mode, {})[method] = record["extra_trials"]
        if record["widened"]:
            entry["widened"].setdefault(mode, {})[method] = sorted(record["widened"])
    entry["seconds"] = round(time.perf_counter() - start, 1)
    _merge_settings(out, [*checkpoint_paths(path)], {weights.stem: entry})
    return entry


def checkpoint_study_name(name: str, weights_sha256: str, mode: str, method: str, trials: int, ratio: float,
                          seed: int, retain_sample: int) -> str:
    """A `tune_checkpoint` study's name in a shared storage: the checkpoint's name, the mode, the
    tuning seed, the method and a CRC-32 of what changes its trials (the weights' SHA-256, the
    budget, the forget ratio, the seed, the retain sample), so two tunings never share a study."""
    options = {"weights": weights_sha256, "trials": trials, "ratio": ratio, "seed": seed,
               "retain_sample": retain_sample}
    fingerprint = zlib.crc32(json.dumps(options, sort_keys=True).encode())
    return f"{name}__{mode}__s{seed}__{method}__{fingerprint:08x}"


_SHARED: tuple[Any, Any] | None = None
_STORAGES: dict[str, Any] = {}


def _start(model, data, threads: int, plugins: Sequence[str] = ()) -> None:
    global _SHARED
    torch.set_num_threads(threads)
    load_plugins(plugins)  # the methods that plugins registered
    _SHARED = (model, data)


def _storage(url: str) -> Any:
    """The shared storage at `url`, opened once per process."""
    from core.evaluation.storage import open_storage

    if url not in _STORAGES:
        _STORAGES[url] = open_storage(url)
    return _STORAGES[url]


def _result(url: str, name: str) -> dict[str, Any] | None:
    """The record of the shared study `name` once a process has finished it (the study's
    "result" attribute); None before."""
    storage = _storage(url)
    try:
        study = storage.get_study_id_from_name(name)
    except KeyError:  # not created yet
        return None
    return storage.get_study_user_attrs(study).get("result")


def _piece(model, data, job, trials: int, seed: int, retain_sample: int, storage: str) -> Any:
    """One shared study as `claims` takes it: its claim's name, whether it is finished, and
    what runs it (`tune` in the storage, then its record kept as the study's "result")."""
    method, requests, sampler_seed, name = job

    def run() -> None:
        shared = _storage(storage)
        record = tune(method, model, requests, data, trials, seed, retain_sample, sampler_seed=sampler_seed,
                      storage=shared, study_name=name)
        shared.set_study_user_attr(shared.get_study_id_from_name(name), "result", record)

    return f"study__{name}", lambda: _result(storage, name) is not None, run


def _run_study(model, data, job, trials: int, seed: int, retain_sample: int, storage: str | None = None,
               folder: Path | None = None) -> dict[str, Any] | None:
    """`tune` on one (method, requests, sampler seed, study name) job; with `storage` only when
    this process claims the study in `folder` (then None: the record is read from the storage)."""
    if storage is None:
        method, requests, sampler_seed, _ = job
        return tune(method, model, requests, data, trials, seed, retain_sample, sampler_seed=sampler_seed)
    from core.evaluation.claims import work

    assert folder is not None, "a shared study is claimed in a folder"
    work(folder, *_piece(model, data, job, trials, seed, retain_sample, storage))
    return None


def _study(job, **options: Any) -> dict[str, Any] | None:
    """`_run_study` in a worker process, on the model and data `_start` received."""
    assert _SHARED is not None, "_start runs first in every worker process"
    return _run_study(*_SHARED, job, **options)


def _in_processes(model, data, jobs, trials: int, seed: int, retain_sample: int, workers: int,
                  storage: str | None = None, folder: Path | None = None) -> list[dict[str, Any]]:
    """The `tune` record of each (method, requests, sampler seed, study name) job, in order:
    here when `workers` is 1, else in that many spawned processes sharing torch's threads.
    With `storage`, each study is run by the process that claims it in `folder`, after which
    this one waits for those other invocations hold (`claims.share`) and reads every record
    from the storage."""
    options: dict[str, Any] = {"trials": trials, "seed": seed, "retain_sample": retain_sample,
                               "storage": storage, "folder": folder}
    if workers <= 1 or len(jobs) <= 1:
        records = [_run_study(model, data, job, **options) for job in jobs]
    else:
        import functools

        from core.evaluation.processes import in_processes

        threads = max(1, torch.get_num_threads() // workers)
        plugins = method_plugins([job[0] for job in jobs])  # a spawned process imports them again
        records = in_processes(functools.partial(_study, **options), jobs, workers, _start,
                               (model, data, threads, plugins))
    if storage is None:
        return cast(list[dict[str, Any]], records)
    from core.evaluation.claims import share

    assert folder is not None, "shared studies are claimed in a folder"
    share(folder, [_piece(model, data, job, trials, seed, retain_sample, storage) for job in jobs])
    return [cast(dict[str, Any], _result(storage, job[3])) for job in jobs]  # every study is finished


def tuned_from_bench(folder: str | Path, out: str | Path, benchmarks: Sequence[str] | None = None,
                     command: str = "") -> dict[str, Any]:
    """The choices of a finished `mtu bench` run as the dashboard's starting settings: for each
    benchmark (or `benchmarks`), the config each method's study chose per mode (the studies pool
    every ratio and setting of a mode), merged into `out` under the benchmark's name (the sample
    models carry the benchmarks' names).

    Nothing is tuned here: the studies ran on the bench's tuning seed and were scored on the
    tuning part of val. Raises ValueError naming what is missing when the folder has no studies
    for a benchmark. Returns the document written: {benchmark: entry}.
    """
    folder, out = Path(folder), Path(out)
    plan_file = folder / "plan.json"
    check_settings_output(out, [plan_file])
    if not plan_file.is_file():
        raise ValueError(f"{folder} is not a bench results folder (no plan.json); "
                         "pass the folder `mtu bench` printed")
    plan = json.loads(plan_file.read_text())
    plan = plan.get("plan", plan)
    records = [json.loads(p.read_text()) for p in sorted((folder / "tuning").glob("*.json"))]
    found = sorted({r["benchmark"] for r in records})
    if not found:
        raise ValueError(f"{folder} holds no finished tuning study yet; run `mtu bench` first")
    entries: dict[str, Any] = {}
    for name in benchmarks or found:
        mine = [r for r in records if r["benchmark"] == name]
        if not mine:
            raise ValueError(f"no tuning studies of {name!r} in {folder}; it has {', '.join(found)}")
        entry: dict[str, Any] = {
            "command": command, "date": f"{datetime.now(timezone.utc):%Y-%m-%d}",
            "trials": plan.get("trials"), "seed": plan.get("tuning_seed"),
            "ratios": plan.get("ratios"),
            "source": f"the bench's own {name} model ({plan.get('n_train')} training images at "
                      f"{'x'.join(map(str, plan.get('size', [])))}, forget ratios "
                      f"{', '.join(f'{r:g}' for r in plan.get('ratios', []))}; results folder "
                      f"{folder.name})",
            "scored_on": "UIS v2 on the tuning part of the val split (never its test part)",
            "modes": {}, "best_uis": {}}
        for record in mine:
            entry["modes"].setdefault(record["mode"], {})[record["method"]] = record["chosen"]
            entry["best_uis"].setdefault(record["mode"], {})[record["method"]] = record["best_uis"]
        entries[name] = entry
    return _merge_settings(out, [plan_file], entries)


def _merge_settings(out: Path, inputs: Sequence[Path], entries: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `entries` into the settings document at `out`, read again under `claims.locked`
    (other commands may have changed it meanwhile, or be writing it now) and checked
    (`check_settings_output`); returns the document written."""
    from core.evaluation.claims import locked

    with locked(out):
        document = check_settings_output(out, inputs)
        document.update(entries)
        write_text_atomic(out, json.dumps(document, indent=1, allow_nan=False) + "\n")
    return document


def tuned_settings(path: str | Path) -> dict[str, Any] | None:
    """The tuned entry of the checkpoint at `path` (its name in the tuned.json beside it), or
    None when there is none."""
    from core.checkpoints import checkpoint_paths

    weights = checkpoint_paths(path)[0]
    file = weights.parent / TUNED_FILE
    if not file.is_file():
        return None
    return json.loads(file.read_text()).get(weights.stem)


def tuned_config(entry: Mapping[str, Any] | None, mode: str, method: str,
                 targets: Sequence[str] | None = None) -> dict[str, Any] | None:
    """The tuned config of `method` for `mode` in a `tuned_settings` entry, or None. A partial
    request with a single target task takes that task's setting where the entry has one."""
    if not entry:
        return None
    config = None
    if mode == "partial" and targets and len(targets) == 1:
        config = entry.get("settings", {}).get(f"partial:{targets[0]}", {}).get(method)
    if config is None:
        config = entry.get("modes", {}).get(mode, {}).get(method)
    return dict(config) if config is not None else None


CURVE_COLUMNS = ["benchmark", "mode", "method", "trial", "best"]


def tuning_curves(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The best-so-far curve of every study, long (`CURVE_COLUMNS`): trial counts from 1, best is
    NaN until a trial has succeeded."""
    rows = [{"benchmark": record.get("benchmark"), "mode": record["mode"], "method": record["method"],
             "trial": number, "best": math.nan if best is None else best}
            for record in records for number, best in enumerate(best_so_far(record), 1)]
    return pd.DataFrame(rows, columns=CURVE_COLUMNS)


def tuning_effort(table: pd.DataFrame) -> pd.DataFrame:
    """Per method, from a `tuning_table`: studies, trials (budget + extra), extra trials, failed
    trials, studies whose ranges were widened, studies still improving at their last trial,
    studies not plateaued against their floor (where the table has floors), and the sum of the
    trials' seconds."""
    return table.groupby("method", sort=False).agg(
        studies=("trials", "size"), trials=("trials", "sum"), extra_trials=("extra_trials", "sum"),
        failed=("failed", "sum"), studies_widened=("widened", lambda w: int((w != "no").sum())),
        still_improving=("still_improving", lambda w: int(w.sum())),
        not_plateaued=("plateaued", lambda w: int((w == False).sum())),  # noqa: E712 (NaN: no floor)
        seconds=("seconds", lambda s: round(float(s.sum())))).reset_index()


def tuning_markdown(table: pd.DataFrame) -> str:
    """The tuning table as Markdown: the effort per method, then one sub-table per method."""
    from core.evaluation.report import frame_table

    parts = ["### Effort per method", "", frame_table(tuning_effort(table)), ""]
    for method, group in table.groupby("method", sort=False):
        parts += [f"### {method}", "", frame_table(group.drop(columns="method")), ""]
    return "\n".join(parts)
