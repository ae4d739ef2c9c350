"""`mtu bench`: the benchmark protocol of docs/ARCHITECTURE.md section 13.

For every benchmark and seed a base model is trained once (the plan's recipe with that training
seed, smaller than the shipped sample models so that one exact retrain oracle per cell fits the
time budget): the tuning seed's model is tuned on, each reported seed's model is reported on, so
the intervals cover the base model. A cell is (benchmark, forget ratio, setting, seed): the seed
trains the base model and draws the forget instances (the same ones for every setting of that
ratio and seed); the setting is "full" or "partial:<task>" (forget that one task, keep the
others). In each cell the retrain oracle is trained once and cached, every method runs with its
tuned configuration (the `SANITY_TIER` methods only in the first ratio and seed of each
benchmark, unless the plan names its methods) and `compare_methods` (which the dashboard's
Compare page calls too) scores them all, with the reference rows `original` (doing nothing),
`retrain` (the oracle) and, in the cells of the plan's first `floor` seeds, `retrain_2` (a
second oracle, training seed + 1: the retrain-vs-retrain floor of oracle-referenced scores).

Tuning (`core.evaluation.tuning`): every method, ours and its ablations included, gets the same
number of trials (`BenchPlan.trials`) of Optuna's TPE sampler, seeded per study (`study_seed`),
over its own declared search space (`core.unlearning.search`), a range widened when the choice
falls on its edge (the extra trials counted). One study per benchmark, mode and method, pooled:
each trial runs every request of the tuning seed in that mode (every ratio, and in partial mode
every partial setting) and scores their mean UIS v2 against each request's retrain oracle.
Tuning trials are scored on the val split's tuning part (`core.data.split_val`), never on its
test part, and the methods themselves see only its calibration part (`UnlearningData`): the test
part is read by the report alone. Every trial and choice goes to tuning/<study>.json, gathered
in tuning.json and tuning.csv.

The score is UIS v2 (`SCORE`, benchmarks/DECISIONS.md section 10). Beside it the report gives
protocol 3's UIS,, per cell, the oracle-referenced UIS and the gap to the oracle
(`compare_models`), the retrain-vs-retrain floor, per benchmark and ratio the forget-gap noise floor
(`core.evaluation.reference`) and the instance counts, and over cells the paired comparisons of
ours against every baseline and the headline with 95% intervals and verdicts
(`core.evaluation.stats`).

Everything is written under one results folder and reused when present, so an interrupted run
resumes where it stopped: the base models, the tuning studies (per benchmark, mode and method),
the oracles and the finished cells; each invocation's wall time is added to invocations.json.

Across processes and machines (`storage`, `mtu bench --storage URL`): the tuning studies live in
that shared Optuna storage (`core.evaluation.storage`; a study keeps its trials when its process
is killed, and a killed trial is redone) and every base model, oracle, study and cell is computed
by the one process that claims it in the results folder (`core.evaluation.claims`); each
invocation does what it can claim, waits for what others hold (taking over a stopped process's
claims), then writes the tables, the same from every invocation.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from core.checkpoints import ModelCard, checkpoint_paths, load_checkpoint, read_card, save_checkpoint
from core.data.sources import DataSource
from core.evaluation import claims
from core.evaluation.ablations import ablation_table
from core.evaluation.compare import Comparison, compare_methods
from core.evaluation.conflict import analyze_conflicts
from core.evaluation.geometry import task_geometry
from core.evaluation.reference import NOISE_FLOOR_COLUMNS, forget_gap_noise_floor
from core.evaluation.stats import (
    BASE_SEED,
    MIA_TOLERANCE,
    PAPER_REDUCTIONS,
    UIS_TARGETS,
    abs_interval,
    bootstrap_reduction,
    cluster_keys,
    cluster_ratio,
    paired_comparisons,
    reduction_verdicts,
    verdict_at_least,
    verdict_at_most,
)
from core.evaluation.tuning import SCORE, study_seed, tune, tuning_curves, tuning_table
from core.outputs import write_text_atomic
from core.plugins import load_plugins
from core.requests import ForgetRequest
from core.training import TrainConfig, train_checkpoint
from core.unlearning.ablations import VARIANTS, CalibratedStop
from core.unlearning.base import REGISTRY, UnlearningData, get_unlearner, list_unlearners, method_plugins
from core.unlearning.search import search_space

ORIGINAL, ORACLE, OURS = "original", "retrain", "interference_aware"
SECOND_ORACLE = "retrain_2"
"""The second oracle (training seed + 1) of the floor cells: a reference, never a method."""
REFERENCES = (ORIGINAL, ORACLE, SECOND_ORACLE)
MODES = ("full", "partial")
SANITY_TIER = ("finetune", "grad_ascent", "pcgrad", "ssd")
"""Methods never competitive (benchmarks/DECISIONS.md, section 8): in a plan that names no
methods they run, and are tuned, only in the first ratio and seed of each benchmark, and only
when the plan keeps its `sanity` tier (protocol 5 leaves it out to fit the budget, section 14)."""


class BenchError(ValueError):
    """A plan or results folder that cannot be used as asked."""


@dataclass(frozen=True)
class BenchPlan:
    """What a benchmark run covers. Cells: benchmarks x ratios x settings x seeds."""

    benchmarks: tuple[str, ...] = ("synthetic-conflict-high", "synthetic-indoor")
    ratios: tuple[float, ...] = (0.10,)
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5)
    tuning_seed: int = 0
    methods: tuple[str, ...] = ()
    """Methods to compare; empty = every registered method except the oracle."""
    trials: int = 16
    """Tuning trials per method and study (benchmark, mode), the same for every method (plus the
    widening rounds of `core.evaluation.tuning`); benchmarks/DECISIONS.md section 11 says why."""
    floor: int = 1
    """Reported seeds (the first ones) whose cells also train a second oracle (`SECOND_ORACLE`)."""
    draws: int = 3
    """Forget draws per tuning request on the tuning seed: the search scores draw 0, its `rescore`
    best configurations are scored again on the others, and the lowest mean is chosen."""
    rescore: int = 4
    """Configurations of each study's search that are scored again on the further draws."""
    rescore_at: tuple[int, ...] = ()
    """Earlier budgets at which each study also records the same re-scoring (plateau studies)."""
    partial_only: tuple[str, ...] = ("synthetic-indoor:segmentation",)
    """"benchmark:task": a benchmark named here keeps only these partial settings, in tuning and
    in cells; the others keep one per task."""
    sanity: bool = False
    """Whether a plan that names no methods runs the `SANITY_TIER` (in its first ratio and seed)."""
    tune_variants: bool = False
    """Whether the variants of ours get studies of their own; else they run at ours' choice."""
    n_train: int = 400
    n_val: int = 300
    size: tuple[int, int] = (32, 32)
    data_seed: int = 0
    epochs: int = 40
    width: int = 16
    retain_sample: int = 64
    noise_draws: int = 200
    """Random unseen sets per benchmark and ratio for the forget-gap noise floor."""
    protocol: int = 5
    """Version of the evaluation protocol; 2 = tuning scored on the tuning part of val, oracle
    referenced scores, balanced and reference attacks; 3 = and every method tuned with the same
    number of TPE trials per setting and ratio; 4 = UIS v2, studies pooled per mode with a
    sampler seed each, a base model per seed, a second oracle; 5 = steps 5-240, the top
    configurations re-scored on more tuning draws, a tuning floor and plateau flag, the variants
    at ours' choice (benchmarks/DECISIONS.md section 14). Results of another version are refused."""

    def __post_init__(self):
        known = list_unlearners()
        for name in self.all_methods():
            if name not in known or name == ORACLE:
                raise BenchError(f"unknown method {name!r} for the bench; accepted: "
                                 f"{', '.join(m for m in known if m != ORACLE)}")
        for ratio in self.ratios:
            if not 0 < ratio < 1:
                raise BenchError(f"forget ratio {ratio} is not in (0, 1)")
        if self.trials < 1:
            raise BenchError(f"trials must be at least 1, got {self.trials}")
        if self.draws < 1:
            raise BenchError(f"draws must be at least 1, got {self.draws}")
        if self.tuning_seed in self.seeds:
            raise BenchError(f"the tuning seed {self.tuning_seed} is also a reported seed; "
                             "tuning must never see the reported seeds")

    def all_methods(self) -> list[str]:
        """The plan's methods, or every registered one but the oracle and
        (unless the plan keeps its `sanity` tier) the `SANITY_TIER`."""
        if self.methods:
            return list(self.methods)
        left_out = {ORACLE, *(() if self.sanity else SANITY_TIER)}
        return [m for m in list_unlearners() if m not in left_out]

    def tuned_methods(self) -> list[str]:
        """The methods with studies of their own: all but the variants of ours, which run at
        ours' choice (unless `tune_variants`); ours always has one when a variant runs."""
        methods = self.all_methods()
        if self.tune_variants:
            return methods
        own = [m for m in methods if m not in VARIANTS]
        return own if OURS in own or len(own) == len(methods) else [OURS, *own]

    def settings(self, benchmark: str, tasks: Sequence[str]) -> list[str]:
        """"full" and the partial settings of `benchmark` (one per task, or `partial_only`'s)."""
        pairs = [entry.split(":", 1) for entry in self.partial_only]
        chosen = [task for name, task in pairs if name == benchmark]
        unknown = [task for task in chosen if task not in tasks]
        if unknown:
            raise BenchError(f"partial_only names {', '.join(repr(f'{benchmark}:{t}') for t in unknown)}; "
                             f"{benchmark}'s tasks are {', '.join(tasks)}")
        return ["full"] + [f"partial:{t}" for t in tasks if not chosen or t in chosen]

    def cell_methods(self, ratio: float, seed: int) -> list[str]:
        """The methods of the cells of (ratio, seed): all of them, less `SANITY_TIER` outside
        the first ratio and seed when the plan names no methods (named ones run everywhere)."""
        first = (ratio, seed) == (self.ratios[0], self.seeds[0])
        return [m for m in self.all_methods() if first or self.methods or m not in SANITY_TIER]

    def source(self, benchmark: str) -> DataSource:
        return DataSource(benchmark=benchmark, seed=self.data_seed, n_train=self.n_train,
                          n_val=self.n_val, size=tuple(self.size))

    def fingerprint(self) -> dict[str, Any]:
        """The fields that change results already on disk (not the lists of cells to run)."""
        skip = {"benchmarks", "ratios", "seeds", "methods"}
        return json.loads(json.dumps({k: v for k, v in asdict(self).items() if k not in skip}))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


FULL = BenchPlan()
"""`mtu bench` (benchmarks/DECISIONS.md section 11: what it covers and the time it takes)."""

QUICK = BenchPlan(benchmarks=("synthetic-conflict-high",), ratios=(0.05,), seeds=(1,), trials=2, n_train=200,
                  n_val=150, epochs=30, retain_sample=48, draws=2, rescore=2)
"""`mtu bench --quick`: one benchmark, one ratio, one seed, 2 trials per method (the best 2 scored
again on a second draw), a smaller base model."""


def settings_of(tasks: Sequence[str]) -> list[str]:
    """"full" and one "partial:<task>" per task."""
    return ["full"] + [f"partial:{t}" for t in tasks]


def setting_mode(setting: str) -> str:
    """"full" or "partial"."""
    return "full" if setting == "full" else "partial"


def setting_tasks(setting: str) -> list[str] | None:
    """The target tasks of a setting (None = all)."""
    return None if setting == "full" else [setting.split(":", 1)[1]]


def forget_instances(train_ids: Sequence[int], ratio: float, seed: int, draw: int = 0) -> list[int]:
    """round(ratio x N) training ids (at least 1), drawn by (seed, ratio) and, past the first,
    the `draw` (the tuning seed's further forget draws), sorted."""
    count = max(1, round(ratio * len(train_ids)))
    rng = np.random.default_rng([seed, round(ratio * 10_000), *([draw] if draw else [])])
    return sorted(int(i) for i in rng.choice(np.asarray(train_ids), size=count, replace=False))


def stored(path: Path) -> bool:
    """Whether the checkpoint at `path` is there, weights and card (the card is written last).
    A card without its weights is a results folder carried without them (`save_as_recorded`)."""
    weights, card = checkpoint_paths(path)
    return card.is_file() and weights.is_file()


def save_as_recorded(train: Callable[[], tuple[torch.nn.Module, ModelCard]], path: Path) -> None:
    """Train a bench checkpoint and save it at `path`. The JSON files of a results folder are its
    record and the checkpoints caches, so a folder may travel without its .safetensors: where a
    card is there without its weights, the retrained weights must be the ones it names (same
    SHA-256: training is seeded and deterministic on one platform and library versions), or
    BenchError, with the card as it was and no new weights left beside it."""
    weights, card_path = checkpoint_paths(path)
    before = card_path.read_text() if card_path.is_file() else None
    expected = read_card(card_path) if before is not None else None
    model, card = train()
    save_checkpoint(model, card, path)
    if expected is None or card.weights_sha256 == expected.weights_sha256:
        return
    weights.unlink(missing_ok=True)
    write_text_atomic(card_path, before or "")
    changed = {k: f"{v} -> {card.versions.get(k)}" for k, v in expected.versions.items()
               if card.versions.get(k) != v}
    raise BenchError(f"{path} was trained again (its weights were missing), but its card names weights "
                     f"{expected.weights_sha256[:12]}... and the new ones are {card.weights_sha256[:12]}...: "
                     f"not the checkpoint the recorded results used (library versions changed: "
                     f"{changed or 'none'}); bring its .safetensors file or start the folder afresh "
                     "(--fresh)")


def cell_key(benchmark: str, ratio: float, setting: str, seed: int) -> str:
    return f"{benchmark}__r{ratio:g}__{setting.replace(':', '-')}__s{seed}"


def _write_json(path: Path, data: Any) -> None:
    """Write through a temporary file, so an interruption never leaves half a file."""
    write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False, default=str))


def _add_entry(path: Path, key: str, value: Any) -> dict[str, Any]:
    """Set `key` in the JSON object at `path` (a cache of the bench's folder) and return the
    object, reading it again under `claims.locked`: other invocations sharing the folder may
    add their keys at once."""
    with claims.locked(path):
        record = {**(json.loads(path.read_text()) if path.is_file() else {}), key: value}
        _write_json(path, record)
    return record


class Bench:
    """One results folder and the plan that fills it. `run()` does what is missing."""

    def __init__(self, plan: BenchPlan, out: str | Path, log: Callable[[str], None] = print,
                 show_bars: bool = True, check_folder: bool = True, storage: str | None = None):
        """`storage`: the URL of an Optuna storage that several processes share (a database URL
        or a journal file's path, `core.evaluation.storage.open_storage`); with it, the studies
        live there and every piece of work is claimed (`core.evaluation.claims`)."""
        self.plan, self.out, self.log, self.show_bars = plan, Path(out), log, show_bars
        self.storage = storage
        self._storage: Any = None
        self._models: dict[str, tuple[torch.nn.Module, ModelCard, UnlearningData]] = {}
        if check_folder:
            self._check_folder()

    def _check_folder(self) -> None:
        path = self.out / "plan.json"
        foreign = sorted(entry.name for entry in self.out.iterdir()
                         if entry.name not in (*RESULT_FILES, *RESULT_FOLDERS)
                         and not _result_temporary(entry.name)) if self.out.is_dir() else []
        if foreign and not path.exists():
            raise BenchError(f"{self.out} is not a results folder of mtu bench (no plan.json, and it "
                             f"holds {', '.join(foreign[:5])}); choose a new or empty --out")
        if self.out.exists() and not self.out.is_dir():
            raise BenchError(f"--out {self.out} is a file; choose a new or empty folder")
        if path.exists():
            before = read_plan_file(self.out)["fingerprint"]
            if before != self.plan.fingerprint():
                changed = sorted(k for k in self.plan.fingerprint() if (before or {}).get(k)
                                 != self.plan.fingerprint()[k])
                raise BenchError(f"{self.out} holds results of a different plan (changed: "
                                 f"{', '.join(changed) or 'all'}); pass another --out or --fresh")
        _write_json(path, {"fingerprint": self.plan.fingerprint(), "plan": self.plan.to_dict()})

    # -- base models ------------------------------------------------------------------------------
    def base(self, benchmark: str,
             seed: int | None = None) -> tuple[torch.nn.Module, ModelCard, UnlearningData]:
        """The benchmark's base model of training seed `seed` (default: the tuning seed; trained
        once, then read from disk), its card and data."""
        seed = self.plan.tuning_seed if seed is None else seed
        key = f"{benchmark}__b{seed}"
        if key not in self._models:
            path = self.base_path(benchmark, seed)
            if not stored(path):
                self.log(f"training the {benchmark} base model of seed {seed} ({self.plan.epochs} epochs)")

                def train() -> tuple[torch.nn.Module, ModelCard]:
                    source = self.plan.source(benchmark)
                    source.resolve()
                    architecture = {"name": "small_cnn", "args": {"width": self.plan.width}}
                    recipe = TrainConfig(epochs=self.plan.epochs, seed=seed)
                    return train_checkpoint(source, architecture, recipe, show_bar=self.show_bars)

                save_as_recorded(train, path)
            model, card = load_checkpoint(path)
            self._models[key] = (model, card, UnlearningData.from_card(card))
        return self._models[key]

    def base_path(self, benchmark: str, seed: int) -> Path:
        return self.out / "models" / f"{benchmark}__b{seed}"

    def tasks(self, benchmark: str) -> list[str]:
        return list(self.base(benchmark)[0].tasks)

    def request(self, benchmark: str, ratio: float, setting: str, seed: int, draw: int = 0) -> ForgetRequest:
        """The forget request of a cell (seed: a reported seed or the tuning seed; `draw`: one of
        the tuning seed's further forget draws), on the base model of that seed."""
        model, card, _ = self.base(benchmark, seed)
        return ForgetRequest.build(forget_instances(card.train_ids, ratio, seed, draw),
                                   setting_tasks(setting), card.train_ids, list(model.tasks))

    # -- tuning -----------------------------------------------------------------------------------
    def studies(self) -> list[tuple[str, str, str]]:
        """(benchmark, mode, method) of every tuning study of the plan."""
        first = self.plan.cell_methods(self.plan.ratios[0], self.plan.seeds[0])
        return [(b, mode, m) for b in self.plan.benchmarks for mode in MODES
                for m in self.plan.tuned_methods() if m in first]

    def tuning_requests(self, benchmark: str, mode: str) -> list[tuple[float, str]]:
        """(ratio, setting) of every request a study of `mode` scores per trial: each ratio, and
        in partial mode each partial setting."""
        return [(r, s) for r in self.plan.ratios for s in self.plan.settings(benchmark, self.tasks(benchmark))
                if setting_mode(s) == mode]

    def tuning_path(self, benchmark: str, mode: str, method: str) -> Path:
        return self.out / "tuning" / f"{benchmark}__{mode}__s{self.plan.tuning_seed}__{method}.json"

    def tuned(self, benchmark: str, mode: str, method: str) -> dict[str, Any]:
        """The chosen configuration of `method` for (benchmark, mode): its study on the tuning
        seed's requests of that mode, each against its oracle (`core.evaluation.tuning.tune`,
        `plan.trials` trials; the best `plan.rescore` configurations scored again on the further
        `plan.draws`), run first when tuning/ has no record of it. A variant of ours without a
        study of its own takes ours' choice of the knobs it would search (`search_space`: not a
        knob the variant fixes)."""
        if method not in self.plan.tuned_methods():
            chosen = self.tuned(benchmark, mode, OURS)
            searched = search_space(method, mode)
            return {k: v for k, v in chosen.items() if k in searched}
        path = self.tuning_path(benchmark, mode, method)
        if not path.is_file():
            model, _, data = self.base(benchmark)
            cells = self.tuning_requests(benchmark, mode)
            seed = self.plan.tuning_seed
            draws = [[self.request(benchmark, r, s, seed, d) for r, s in cells]
                     for d in range(self.plan.draws)]
            oracles = [[self.oracle(benchmark, r, s, seed, draw=d)[0] for r, s in cells]
                       for d in range(self.plan.draws)]
            shared = {} if self.storage is None else {"storage": self.shared_storage(),
                                                      "study_name": self.study_name(benchmark, mode, method)}
            record = tune(method, model, draws[0], data, self.plan.trials, seed, self.plan.retain_sample,
                          sampler_seed=study_seed(seed, benchmark, mode, method), oracles=oracles[0],
                          rescore=list(zip(draws[1:], oracles[1:])), top=self.plan.rescore,
                          rescore_at=self.plan.rescore_at, **shared)

            def described(requests: Sequence[ForgetRequest]) -> list[dict[str, Any]]:
                return [{"ratio": r, "setting": s, "instances": list(q.instances)}
                        for (r, s), q in zip(cells, requests)]

            _write_json(path, {"benchmark": benchmark, "tuned_on": described(draws[0]),
                               "draws_tuned_on": [described(d) for d in draws[1:]], **record})
        return dict(json.loads(path.read_text())["chosen"])

    def study_name(self, benchmark: str, mode: str, method: str) -> str:
        """A study's name in the shared storage: its record's name and the plan's fingerprint
        (CRC-32), so two plans never share a study."""
        fingerprint = zlib.crc32(json.dumps(self.plan.fingerprint(), sort_keys=True).encode())
        return f"{self.tuning_path(benchmark, mode, method).stem}__{fingerprint:08x}"

    def shared_storage(self) -> Any:
        """The Optuna storage at `storage`, opened once per process."""
        if self._storage is None:
            from core.evaluation.storage import open_storage

            self._storage = open_storage(self.storage)
        return self._storage

    def tuning_floor(self, benchmark: str, mode: str) -> float:
        """The retrain-vs-retrain floor of a study's score: the mean UIS v2 of the second oracle
        (base recipe's seed + 1) against the oracle over the mode's tuning requests (draw 0),
        scored as a trial is (tuning part of val); cached in tuning_floor.json."""
        path = self.out / TUNING_FLOOR
        record = json.loads(path.read_text()) if path.is_file() else {}
        key = f"{benchmark}__{mode}"
        if key not in record:
            from core.evaluation.compare import compare_models

            model, _, data = self.base(benchmark)
            seed, scores = self.plan.tuning_seed, []
            for ratio, setting in self.tuning_requests(benchmark, mode):
                request = self.request(benchmark, ratio, setting, seed)
                models = {ORIGINAL: model,
                          SECOND_ORACLE: self.oracle(benchmark, ratio, setting, seed, True)[0],
                          ORACLE: self.oracle(benchmark, ratio, setting, seed)[0]}
                board = compare_models(models, request, data, retain_sample=self.plan.retain_sample,
                                       seed=seed, mia=False, heldout="tuning").leaderboard
                scores.append(float(board.set_index("model").at[SECOND_ORACLE, SCORE]))
            record = _add_entry(path, key, float(np.mean(scores)))
        return float(record[key])

    def tuning_floors(self) -> dict[tuple[str, str], float]:
        """`tuning_floor` of every (benchmark, mode) of the plan's studies."""
        return {(b, mode): self.tuning_floor(b, mode) for b, mode in dict.fromkeys(
            (b, mode) for b, mode, _ in self.studies())}

    def tuning_records(self) -> list[dict[str, Any]]:
        """The records of the plan's finished studies, in the order of `studies`."""
        paths = [self.tuning_path(*study) for study in self.studies()]
        return [json.loads(path.read_text()) for path in paths if path.is_file()]

    def tune_all(self, workers: int = 1, studies: Sequence[tuple[str, str, str]] | None = None) -> None:
        """Run every study of the plan (or only `studies`, (benchmark, mode, method) each) that
        tuning/ has no record of, after the tuning seed's oracles they need."""
        studies = self.studies() if studies is None else list(studies)
        todo = [study for study in studies if not self.tuning_path(*study).is_file()]
        floor_file = self.out / TUNING_FLOOR
        floors = json.loads(floor_file.read_text()) if floor_file.is_file() else {}
        # the oracles of the groups with a study to run or a floor to measure (none for a
        # finished folder carried without its weights)
        groups = dict.fromkeys((b, mode) for b, mode, method in studies
                               if (b, mode, method) in todo or f"{b}__{mode}" not in floors)
        seed = self.plan.tuning_seed
        self._share("base", [(b, seed) for b in dict.fromkeys(b for b, _ in groups)])
        oracles = [(b, r, s, seed, second, draw) for b, mode in groups
                   for r, s in self.tuning_requests(b, mode)
                   for second, draw in [(True, 0), *((False, d) for d in range(self.plan.draws))]]
        self._in_workers(_worker_oracle, [o for o in oracles if not stored(self.oracle_path(*o))],
                         workers, "tuning oracles")
        self._share("oracle", oracles)
        self._in_workers(_worker_tune, todo, workers, "tuning")
        self._share("study", studies)
        for study in tqdm(todo, desc="tuning", disable=not self.show_bars or workers > 1):
            self.tuned(*study)

    # -- cells ------------------------------------------------------------------------------------
    def cells(self) -> list[tuple[str, float, str, int]]:
        return [(b, r, s, seed) for b in self.plan.benchmarks for r in self.plan.ratios
                for s in self.plan.settings(b, self.tasks(b)) for seed in self.plan.seeds]

    def oracle_path(self, benchmark: str, ratio: float, setting: str, seed: int,
                    second: bool = False, draw: int = 0) -> Path:
        return self.out / "oracles" / (cell_key(benchmark, ratio, setting, seed) + ("__2" if second else "")
                                       + (f"__d{draw}" if draw else ""))

    def oracle(self, benchmark: str, ratio: float, setting: str, seed: int,
               second: bool = False, draw: int = 0) -> tuple[torch.nn.Module, float]:
        """The retrain oracle of a cell (of the tuning seed's request too) and its training time,
        cached under oracles/; `second`: the second oracle, trained with the base recipe's
        seed + 1."""
        path = self.oracle_path(benchmark, ratio, setting, seed, second, draw)
        if not stored(path):
            def train() -> tuple[torch.nn.Module, ModelCard]:
                from core.unlearning.runner import unlearned_card

                model, card, data = self.base(benchmark, seed)
                request = self.request(benchmark, ratio, setting, seed, draw)
                config = {"train_seed": int(card.training["seed"]) + 1} if second else {}
                result = get_unlearner(ORACLE, config).run(model, request, data)
                return result.model, unlearned_card(card, f"models/{benchmark}__b{seed}", result, [])

            save_as_recorded(train, path)
        oracle, card = load_checkpoint(path)
        return oracle, float(card.request["seconds"])

    def cell(self, benchmark: str, ratio: float, setting: str, seed: int) -> dict[str, Any]:
        """Run (or read back) one cell: {"key", ..., "comparison", "conflicts", "configs"}."""
        path = self.cell_path(benchmark, ratio, setting, seed)
        methods = self.plan.cell_methods(ratio, seed)
        if path.is_file():
            done = json.loads(path.read_text())
            if set(methods) <= set(done["configs"]):
                return done
        start = time.perf_counter()
        model, _, data = self.base(benchmark, seed)
        request = self.request(benchmark, ratio, setting, seed)
        mode = setting_mode(setting)
        references = {ORACLE: self.oracle(benchmark, ratio, setting, seed)}
        if seed in self.plan.seeds[:self.plan.floor]:
            references[SECOND_ORACLE] = self.oracle(benchmark, ratio, setting, seed, True)
        configs = {method: {**self.tuned(benchmark, mode, method), "seed": seed} for method in methods}
        comparison = compare_methods(model, request, data, configs, references,
                                     retain_sample=self.plan.retain_sample, seed=seed)
        conflicts = analyze_conflicts(model, request, data, seed=seed).overall
        done = {"benchmark": benchmark, "ratio": ratio, "setting": setting, "mode": mode, "seed": seed,
                BASE_SEED: seed, "instances": list(request.instances), "configs": configs,
                "comparison": comparison.to_dict(), "conflicts": conflicts.to_dict("records")}
        done["wall_seconds"] = round(time.perf_counter() - start, 2)
        _write_json(path, done)
        return done

    def cell_path(self, benchmark: str, ratio: float, setting: str, seed: int) -> Path:
        return self.out / "cells" / f"{cell_key(benchmark, ratio, setting, seed)}.json"

    # -- references ---------------------------------------------------------------------------
    def noise_floor(self, benchmark: str, ratio: float) -> list[dict[str, Any]]:
        """The forget-gap noise floor of the base model at `ratio` (`forget_gap_noise_floor` on
        the test part, `plan.noise_draws` sets of the forget set's size), one row per setting
        ("full": the mean over tasks; "partial:<task>": that task); cached in noise_floor.json.
        No rows when the forget set is larger than the test part. The base model: the first
        reported seed's."""
        path = self.out / "noise_floor.json"
        record = json.loads(path.read_text()) if path.is_file() else {}
        key = f"{benchmark}__r{ratio:g}"
        if key not in record:
            model, card, data = self.base(benchmark, self.plan.seeds[0])
            size = len(forget_instances(card.train_ids, ratio, 0))
            rows = []
            if size <= len(data.held_out("test")[1]):
                frame = forget_gap_noise_floor(model, data, size, draws=self.plan.noise_draws, seed=0)
                for row in frame.to_dict("records"):
                    setting = "full" if row["task"] == "all" else f"partial:{row['task']}"
                    row = {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                    rows.append({"benchmark": benchmark, "ratio": ratio, "setting": setting, **row})
            record = _add_entry(path, key, rows)
        return record[key]

    def geometry(self) -> pd.DataFrame:
        """`task_geometry` of every benchmark's tuning-seed base model (forget images: the tuning
        seed's at the plan's first ratio; retain sample: `plan.retain_sample`), a "benchmark"
        column first: measured before, and apart from, any reported cell."""
        frames = []
        for benchmark in self.plan.benchmarks:
            model, card, data = self.base(benchmark)
            instances = forget_instances(card.train_ids, self.plan.ratios[0], self.plan.tuning_seed)
            frame = task_geometry(model, data, instances, retain_sample=self.plan.retain_sample)
            frames.append(frame.assign(benchmark=benchmark))
        frame = pd.concat(frames, ignore_index=True)
        return frame[["benchmark", *(c for c in frame.columns if c != "benchmark")]]

    def counts(self) -> pd.DataFrame:
        """Instances per benchmark and ratio: forget, retain, train, and the val split's parts."""
        rows = []
        for benchmark in self.plan.benchmarks:
            _, card, data = self.base(benchmark)
            parts = {part: len(data.held_out(part)[1]) for part in ("calibration", "tuning", "test")}
            for ratio in self.plan.ratios:
                forget = len(forget_instances(card.train_ids, ratio, 0))
                rows.append({"benchmark": benchmark, "ratio": ratio, "forget": forget,
                             "retain": len(card.train_ids) - forget, "train": len(card.train_ids),
                             "val_calibration": parts["calibration"], "val_tuning": parts["tuning"],
                             "val_test": parts["test"]})
        return pd.DataFrame(rows)

    # -- sharing the work between processes ----------------------------------------------------
    def _output(self, kind: str, job: tuple) -> Path:
        """The file whose presence says a piece of work ("base", "oracle", "study", "cell") is done."""
        if kind in ("base", "oracle"):
            return checkpoint_paths(self._path(kind, job))[0]  # with its card (`stored`)
        return self._path(kind, job)

    def _path(self, kind: str, job: tuple) -> Path:
        paths = {"base": self.base_path, "oracle": self.oracle_path, "study": self.tuning_path,
                 "cell": self.cell_path}
        return paths[kind](*job)

    def _piece(self, kind: str, job: tuple) -> claims.Piece:
        """A piece of work ("base", "oracle", "study", "cell") as `claims` takes it: its claim's
        name, whether its output is there, and the method that computes it or reads it back."""
        run = {"base": self.base, "oracle": self.oracle, "study": self.tuned, "cell": self.cell}[kind]
        name = self._path(kind, job).name.removesuffix(".json")
        done = (lambda: stored(self._path(kind, job))) if kind in ("base", "oracle") \
            else self._output(kind, job).is_file
        return f"{kind}__{name}", done, lambda: run(*job)

    def work(self, kind: str, job: tuple) -> bool:
        """One piece of work (`_piece`); with a storage only when its output is missing and this
        process claims it (`claims.work`). Returns whether this process ran it."""
        name, done, run = self._piece(kind, job)
        if self.storage is None:
            run()
            return True
        return claims.work(self.out / "claims", name, done, run)

    def _share(self, kind: str, jobs: Sequence[tuple]) -> None:
        """With a storage: every piece of `jobs` not done yet, each by the process that claims
        it, then wait for those other processes hold (`claims.share`). Nothing without one."""
        if self.storage is not None:
            claims.share(self.out / "claims", [self._piece(kind, job) for job in jobs])

    def _in_workers(self, function: Callable, jobs: Sequence, workers: int, desc: str) -> None:
        """`function(job)` for every job in `workers` spawned processes, each with its share of
        torch's threads (`core.evaluation.processes.in_processes`: Ctrl-C stops them all);
        nothing when workers is 1 or there is at most one job (the caller runs what is left,
        reading back what the processes wrote)."""
        if workers <= 1 or len(jobs) <= 1:
            return
        from core.evaluation.processes import in_processes

        threads = max(1, torch.get_num_threads() // workers)
        plugins = method_plugins(self.plan.all_methods())  # a spawned process imports them again
        in_processes(function, jobs, workers, _start_worker,
                     (self.plan, str(self.out), threads, plugins, self.storage), desc, self.show_bars)

    def run(self, workers: int = 1) -> list[dict[str, Any]]:
        """Train the base models, tune, then run every cell (in `workers` processes, each with
        its share of torch's threads); returns the cell records (finished ones are read back)."""
        start = time.perf_counter()
        bases = [(b, seed) for b in self.plan.benchmarks
                 for seed in (self.plan.tuning_seed, *self.plan.seeds)]
        self._in_workers(_worker_base, [job for job in bases if not stored(self.base_path(*job))],
                         workers, "base models")
        self._share("base", bases)
        for benchmark, seed in bases:
            self.base(benchmark, seed)
        self.tune_all(workers)
        cells = self.cells()
        todo = [c for c in cells if not self.cell_path(*c).is_file()]
        self._in_workers(_worker_cell, todo, workers, "cells")
        self._share("cell", cells)
        bars = self.show_bars and workers == 1
        records = [self.cell(*c) for c in tqdm(cells, desc="cells", disable=not bars)]
        self.log(f"bench: {len(records)} cells in {time.perf_counter() - start:.0f} s")
        return records


_WORKER: Bench | None = None


def _start_worker(plan: BenchPlan, out: str, threads: int, plugins: Sequence[str] = (),
                  storage: str | None = None) -> None:
    global _WORKER
    torch.set_num_threads(threads)
    load_plugins(plugins)  # the plan's methods that plugins registered
    _WORKER = Bench(plan, out, log=lambda _: None, show_bars=False, check_folder=False, storage=storage)


def _worker_cell(cell: tuple[str, float, str, int]) -> None:
    _WORKER.work("cell", cell)


def _worker_tune(study: tuple[str, str, str]) -> None:
    _WORKER.work("study", study)


def _worker_oracle(cell: tuple) -> None:
    _WORKER.work("oracle", cell)


def _worker_base(job: tuple[str, int]) -> None:
    _WORKER.work("base", job)


# -- tables ---------------------------------------------------------------------------------------
_CELL = ["benchmark", "ratio", "setting", "mode", "seed", BASE_SEED]


def cell_frames(records: Iterable[Mapping[str, Any]]) -> dict[str, pd.DataFrame]:
    """Long frames over all cells: "leaderboard" (one row per cell and model), "breakdown" (per
    task), "scores" (primary metric per split and task), "oracle" (gap to the retrain oracle per
    model, split and task) and "conflicts" (cosine per task pair)."""
    parts: dict[str, list[pd.DataFrame]] = {"leaderboard": [], "breakdown": [], "scores": [], "oracle": [],
                                            "conflicts": []}
    for record in records:
        ident = {k: record.get(k, record["seed"]) for k in _CELL}  # base_seed: the seed when absent
        comparison = Comparison.from_dict(record["comparison"])
        for name in ("leaderboard", "breakdown", "scores", "oracle"):
            parts[name].append(getattr(comparison, name).assign(**ident))
        parts["conflicts"].append(pd.DataFrame(record["conflicts"]).assign(**ident))
    frames = {}
    for name, pieces in parts.items():
        frame = pd.concat(pieces, ignore_index=True) if pieces else pd.DataFrame(columns=_CELL)
        frames[name] = frame[_CELL + [c for c in frame.columns if c not in _CELL]]
    return frames


METRICS = [SCORE, "uis", "forget_gap", "ili", "tli", "uis_oracle", "oracle_gap", "mia_auc", "mia_ref_auc",
           "seconds"]


def summary_table(leaderboard: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Mean and std over cells of every leaderboard metric, grouped by `by` + model.

    Columns: by..., model, cells, then <metric>_mean and <metric>_std for `METRICS` (NaN for a
    metric the leaderboard lacks).
    """
    missing = [m for m in METRICS if m not in leaderboard]
    grouped = leaderboard.assign(**{m: math.nan for m in missing}).groupby(list(by) + ["model"], sort=False)
    out = grouped.size().rename("cells").to_frame()
    for metric in METRICS:
        out[f"{metric}_mean"] = grouped[metric].mean()
        out[f"{metric}_std"] = grouped[metric].std(ddof=1)
    return out.reset_index()


def _paired(group: pd.DataFrame, metric: str, models: Sequence[str]) -> pd.DataFrame:
    """`metric` per cell (index: the ratio, setting, seed and base seed columns present) of
    `models`, only the cells where all of them have a value."""
    if metric not in group:
        return pd.DataFrame(columns=list(models))
    cell = [c for c in ("ratio", "setting", "seed", BASE_SEED) if c in group]
    table = group.pivot_table(index=cell, columns="model", values=metric, aggfunc="first")
    return table.reindex(columns=list(models)).dropna()


def target_controls() -> list[str]:
    """The registered methods that carry our calibrated target and stopping rule
    (`CalibratedStop`, e.g. gpm_calibrated): controls, reported beside the strongest baseline,
    never picked as it."""
    return sorted(name for name, method in REGISTRY.items() if issubclass(method, CalibratedStop))


def baseline_pool(models: Iterable[str], ours: str = OURS) -> list[str]:
    """The existing baselines among `models`: neither ours, nor one of our `VARIANTS`, nor a
    reference (original, retrain), nor a control that carries our target (`target_controls`)."""
    excluded = {ours, *REFERENCES, *VARIANTS, *target_controls()}
    return [model for model in models if model not in excluded]


def complete_models(group: pd.DataFrame) -> list[str]:
    """The models of a leaderboard group that have a row in every cell of it (a `SANITY_TIER`
    method that ran in only some cells does not)."""
    cell = [c for c in ("ratio", "setting", "seed", BASE_SEED) if c in group]
    counts = group.drop_duplicates([*cell, "model"]).groupby("model").size()
    total = len(group.drop_duplicates(cell))
    return sorted(counts[counts == total].index)


def _reduction(group: pd.DataFrame, baseline: str, ours: str, seed: int,
               metric: str = SCORE) -> tuple[float, float, float, int, int]:
    """(reduction, low, high, cells, clusters): `bootstrap_reduction` of `ours` against
    `baseline` on `metric` over the cells both have, resampling forget sets (`cluster_keys`)."""
    uis = _paired(group, metric, [baseline, ours])
    clusters, strata = cluster_keys(uis.index.to_frame(index=False))
    reduction, low, high = bootstrap_reduction(uis[baseline].to_numpy(), uis[ours].to_numpy(), clusters,
                                               strata, seed=seed)
    return reduction, low, high, len(uis), len(set(clusters)) if clusters else len(uis)


def headline(leaderboard: pd.DataFrame, ours: str = OURS, targets: Mapping[str, float] = UIS_TARGETS,
             paper: Mapping[str, float] = PAPER_REDUCTIONS, tolerance: float = MIA_TOLERANCE,
             seed: int = 0, metric: str = SCORE) -> pd.DataFrame:
    """Reduction of `metric` (UIS v2) of `ours` against the strongest existing baseline, per
    benchmark and mode, with 95% intervals and verdicts (`core.evaluation.stats`). The columns
    named "uis" hold `metric`; "uis_v1" columns hold protocol 3's UIS of the same two methods.

    The strongest baseline is the method of `baseline_pool` (not ours, not a variant of ours, not
    a reference, not a control that carries our target) that ran in every cell of the group
    (`complete_models`) with the lowest mean score over the group's cells; the strongest
    control (`target_controls`) is reported beside it
    (strongest_control, control_uis, control_reduction_pct / _low / _high), never picked.
    reduction_pct = 100 x (UIS_base - UIS_ours) / UIS_base on the means over the cells both have
    (ratios, settings, seeds); reduction_low / _high: its studentized bootstrap interval over
    forget sets (`cluster_keys`: every (ratio, seed) with all its settings, resampled within its
    ratio; the base model where a `BASE_SEED` column varies); clusters: how many;
    reduction_std: the std over seeds of the same reduction per seed. verdict: the UIS target of
    the mode (`targets`, percent) judged on the interval; better_than_baseline,
    consistent_with_paper, beyond_paper: `reduction_verdicts` against the paper's reduction of
    the mode (`paper`, paper_pct). mia_gap = |mean over cells of (forget AUC of ours - that of
    the oracle)| with its interval over the same clusters (mia_gap_low / _high) and mia_verdict
    against `tolerance`. Also: the oracle-referenced UIS of ours and of that baseline, and the
    reference attack's AUC of ours.
    """
    rows = []
    controls = target_controls()
    for (benchmark, mode), group in leaderboard.groupby(["benchmark", "mode"], sort=False):
        means = group.groupby("model")[metric].mean()
        baselines = means[baseline_pool(complete_models(group), ours)].dropna()
        if ours not in means or baselines.empty:
            continue
        strongest = baselines.idxmin()
        reduction, low, high, cells, clusters = _reduction(group, strongest, ours, seed, metric)
        present = means[[m for m in controls if m in means.index]].dropna()
        control = present.idxmin() if len(present) else None
        control_reduction = (_reduction(group, control, ours, seed, metric)[:3] if control
                             else (math.nan,) * 3)
        v1 = group.groupby("model")["uis"].mean() if "uis" in group and metric != "uis" else means
        per_seed = group.groupby(["seed", "model"])[metric].mean().unstack()
        reductions = 100 * (per_seed[strongest] - per_seed[ours]) / per_seed[strongest]
        auc = _paired(group, "mia_auc", [ours, ORACLE])
        gaps = (auc[ours] - auc[ORACLE]).to_numpy()
        keys = cluster_keys(auc.index.to_frame(index=False))
        gap, gap_low, gap_high = (cluster_ratio(gaps, np.ones_like(gaps), *keys, seed=seed) if len(auc)
                                  else (math.nan,) * 3)
        gap_low, gap_high = abs_interval(gap_low, gap_high)
        model_means = {metric: group.groupby("model")[metric].mean() if metric in group else pd.Series()
                       for metric in ("uis_oracle", "mia_auc", "mia_ref_auc")}
        target, paper_pct = float(targets.get(mode, math.nan)), float(paper.get(mode, math.nan))
        rows.append({"benchmark": benchmark, "mode": mode, "cells": cells, "clusters": clusters,
                     "ours_uis": means[ours], "strongest_baseline": strongest,
                     "baseline_uis": baselines[strongest],
                     "reduction_pct": reduction, "reduction_low": low, "reduction_high": high,
                     "reduction_std": reductions.std(ddof=1) if len(reductions) > 1 else math.nan,
                     "target_pct": target, "verdict": verdict_at_least(low, high, target),
                     "paper_pct": paper_pct, **reduction_verdicts(low, high, paper_pct),
                     "strongest_control": control, "control_uis": present.get(control, math.nan),
                     **dict(zip(("control_reduction_pct", "control_reduction_low", "control_reduction_high"),
                                control_reduction)),
                     "original_uis": means.get(ORIGINAL, math.nan),
                     "retrain_uis": means.get(ORACLE, math.nan),
                     "floor_uis": means.get(SECOND_ORACLE, math.nan),
                     "ours_uis_v1": v1.get(ours, math.nan), "baseline_uis_v1": v1.get(strongest, math.nan),
                     "ours_uis_oracle": model_means["uis_oracle"].get(ours, math.nan),
                     "baseline_uis_oracle": model_means["uis_oracle"].get(strongest, math.nan),
                     "ours_mia_auc": model_means["mia_auc"].get(ours, math.nan),
                     "retrain_mia_auc": model_means["mia_auc"].get(ORACLE, math.nan),
                     "mia_gap": abs(gap), "mia_gap_low": gap_low, "mia_gap_high": gap_high,
                     "mia_verdict": verdict_at_most(gap_low, gap_high, tolerance),
                     "ours_mia_ref_auc": model_means["mia_ref_auc"].get(ours, math.nan)})
    return pd.DataFrame(rows)


def comparisons(leaderboard: pd.DataFrame, ours: str = OURS) -> pd.DataFrame:
    """`paired_comparisons` of `ours` against every other method on UIS v2 (`SCORE`), per
    benchmark and mode (variants and controls included), Holm-adjusted over the whole table."""
    baselines = [m for m in leaderboard["model"].unique() if m not in (ours, *REFERENCES)]
    return paired_comparisons(leaderboard, ours, baselines, metric=SCORE)


FRAMES = ("leaderboard", "breakdown", "oracle", "summary", "details", "headline", "paired",
          "noise_floor", "counts", "tuning", "tuning_curves", "ablations", "geometry")
"""The tables `run_plan` writes as NAME.csv."""
INVOCATIONS = "invocations.json"
"""Every `run_plan` invocation on a folder: when it started, its wall seconds, how it ended."""
TUNING_FLOOR = "tuning_floor.json"
"""The retrain-vs-retrain floor of each (benchmark, mode)'s tuning score (`Bench.tuning_floor`)."""
RESULT_FILES = ("plan.json", "tuning.json", "noise_floor.json", TUNING_FLOOR, INVOCATIONS, "summary.md",
                "report.html",
                *(f"{name}.csv" for name in FRAMES))
RESULT_FOLDERS = ("models", "tuning", "oracles", "cells", "claims")
"""The folders the bench writes JSON records and checkpoints into."""


def _result_temporary(name: str) -> bool:
    """Whether `name` is a temporary file of a result file being written (`write_text_atomic`'s
    ".NAME.<pid>-<hex>.tmp"), e.g. another process's plan.json as it starts."""
    return name.endswith(".tmp") and any(name.startswith(f".{file}.") for file in RESULT_FILES)


def read_plan_file(out: str | Path) -> dict[str, Any]:
    """The plan.json of a results folder of `mtu bench` ({"fingerprint", "plan"}); BenchError
    when `out` has none or it is not one the bench wrote."""
    path = Path(out) / "plan.json"
    if not path.is_file():
        raise BenchError(f"{out} is not a results folder of mtu bench (it has no plan.json); "
                         "--fresh deletes only those: choose another --out")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        document = None
    if not (isinstance(document, dict) and isinstance(document.get("fingerprint"), dict)
            and isinstance(document.get("plan"), dict)):
        raise BenchError(f"{out} is not a results folder of mtu bench ({path} is not a plan the bench "
                         "wrote); --fresh deletes only those: choose another --out")
    return document


def clear_results(out: str | Path) -> list[Path]:
    """Delete what `mtu bench` wrote in `out` (its files and the records and checkpoints in its
    folders) after checking that plan.json is the bench's; anything else stays. Returns what was
    kept: the entries of `out`, and the files in the bench's folders, that the bench did not write."""
    out = Path(out)
    read_plan_file(out)
    kept = []
    for entry in sorted(out.iterdir()):
        if entry.name in RESULT_FOLDERS and entry.is_dir() and not entry.is_symlink():
            for file in sorted(entry.iterdir()):
                if file.is_file() and file.suffix in (".json", ".safetensors", ".tmp"):
                    file.unlink()
                else:
                    kept.append(file)
            if not any(entry.iterdir()):
                entry.rmdir()
        elif (entry.name in RESULT_FILES or (entry.suffix == ".tmp" and entry.stem in RESULT_FILES)) \
                and entry.is_file():
            entry.unlink()
        else:
            kept.append(entry)
    return kept


def run_plan(plan: BenchPlan, out: str | Path, fresh: bool = False, show_bars: bool = True,
             log: Callable[[str], None] = print, workers: int = 1,
             storage: str | None = None) -> dict[str, pd.DataFrame]:
    """Run `plan` into `out` (resuming what is there unless `fresh`) and write the CSVs, the
    Markdown summary and the HTML report. Returns the frames of `cell_frames` plus "summary",
    "details", "headline", "paired" (ours against each baseline), "noise_floor", "counts",
    "tuning" (one row per tuning study, `core.evaluation.tuning.tuning_table`), "tuning_curves"
    (`core.evaluation.tuning.tuning_curves`), "ablations"
    (`core.evaluation.ablations.ablation_table`) and "geometry" (`Bench.geometry`). Each
    invocation's wall time goes to invocations.json (also when it is interrupted), and the
    report prints their sum. `storage`: the URL of an Optuna storage that several invocations on
    the same `out` share (`Bench`): they split the work, and each writes the same tables."""
    from core.evaluation.report import write_report

    out = Path(out)
    if fresh and out.exists() and any(out.iterdir()):
        kept = clear_results(out)
        if kept:
            log(f"--fresh kept what the bench did not write: {', '.join(p.name for p in kept[:10])}")
    start = time.perf_counter()
    bench = Bench(plan, out, log, show_bars, storage=storage)
    began = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        records = bench.run(workers)
    except BaseException as error:
        _record_invocation(out, began, time.perf_counter() - start, f"stopped: {type(error).__name__}")
        raise
    frames = cell_frames(records)
    frames["summary"] = summary_table(frames["leaderboard"], ["benchmark", "mode"])
    frames["details"] = summary_table(frames["leaderboard"], ["benchmark", "ratio", "setting"])
    frames["headline"] = headline(frames["leaderboard"])
    frames["paired"] = comparisons(frames["leaderboard"])
    frames["noise_floor"] = pd.DataFrame([row for b in plan.benchmarks for r in plan.ratios
                                          for row in bench.noise_floor(b, r)],
                                         columns=["benchmark", "ratio", "setting", *NOISE_FLOOR_COLUMNS[1:]])
    frames["noise_floor"] = frames["noise_floor"].astype({c: float for c in ("mean", "low", "high")})
    frames["counts"] = bench.counts()
    tuning = bench.tuning_records()
    _write_json(out / "tuning.json", tuning)
    frames["tuning"] = tuning_table(tuning, bench.tuning_floors())
    frames["tuning_curves"] = tuning_curves(tuning)
    frames["ablations"] = ablation_table(frames["leaderboard"])
    frames["geometry"] = bench.geometry()
    for name in FRAMES:
        write_text_atomic(out / f"{name}.csv", frames[name].to_csv(index=False))
    seconds = time.perf_counter() - start
    invocations = _record_invocation(out, began, seconds, "finished")
    write_report(frames, plan, out, seconds, invocations)
    return frames


def tune_plan(plan: BenchPlan, out: str | Path, show_bars: bool = True, log: Callable[[str], None] = print,
              workers: int = 1, storage: str | None = None) -> pd.DataFrame:
    """Only the tuning studies of `plan` (and the tuning seed's base models and oracles they
    need) into `out`, resuming what is there; writes tuning.json (every study the folder holds,
    the plan's methods or not) and returns its `tuning_table`. No reported seed is touched, so a
    decision read from it has seen no reported cell (`mtu bench --tune-only`). `storage`: as
    `run_plan`'s."""
    out = Path(out)
    bench = Bench(plan, out, log, show_bars, storage=storage)
    bench.tune_all(workers)
    records = [json.loads(path.read_text()) for path in sorted((out / "tuning").glob("*.json"))]
    _write_json(out / "tuning.json", records)
    floors = {(r["benchmark"], r["mode"]): bench.tuning_floor(r["benchmark"], r["mode"]) for r in records}
    return tuning_table(records, floors)


def _record_invocation(out: Path, began: str, seconds: float, ended: str) -> list[dict[str, Any]]:
    """Append one invocation to invocations.json (under `claims.locked`: invocations sharing the
    folder append at once); returns them all."""
    path = out / INVOCATIONS
    with claims.locked(path):
        invocations = json.loads(path.read_text()) if path.is_file() else []
        invocations.append({"started": began, "seconds": round(seconds, 1), "ended": ended})
        _write_json(path, invocations)
    return invocations


def plan_with(base: BenchPlan, **changes: Any) -> BenchPlan:
    """`base` with the non-None `changes` applied (fields of `BenchPlan` only)."""
    names = {f.name for f in fields(BenchPlan)}
    unknown = sorted(set(changes) - names)
    if unknown:
        raise BenchError(f"unknown plan fields {unknown}; accepted: {sorted(names)}")
    return replace(base, **{k: v for k, v in changes.items() if v is not None})
