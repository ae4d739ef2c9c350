"""How many tuning trials make a study plateau: twin studies read along their best-so-far curves.

Reads the tuning studies of a bench folder (e.g. one filled by `mtu bench --tune-only --trials 64`,
on the tuning seed only). Twin studies (`core.evaluation.ablations.TWINS`: two registered names
that run the same code over the same space in a mode, tuned with different sampler seeds) should
reach the same best score once tuning has plateaued; their gap after k trials is the tuning luck
left at a budget of k. For every study it also prints the trial that found its final best.

    .venv/bin/python benchmarks/bench_plateau.py /work/bench-plateau
    .venv/bin/python benchmarks/bench_plateau.py /work/bench-plateau --run --trials 64 --from /work/bench-run3

With `--run` it first tunes the twin studies of `mtu bench`'s plan (both benchmarks) with
`--trials` trials each into the folder (resuming), reusing the tuning seed's base models and
oracles of a finished bench folder given with `--from` (else they are trained). Under protocol 5
(`--draws` above 1) each study's best configurations are scored again on the further forget
draws, at the end and at each budget of `--at` below `--trials` (`rescore_at`), and the twins'
gap is read on those re-scored means, against the tuning floor (tuning_floor.json).

A curve read at trial k of a longer study is random search up to the study's startup trials
(half its budget) and TPE after, so it is not exactly a k-trial study; the last column is.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from core.evaluation.ablations import TWINS
from core.evaluation.tuning import best_so_far


def run_twins(folder: Path, trials: int, source: Path | None, workers: int, draws: int,
              points: list[int]) -> None:
    import shutil

    import torch

    from core.evaluation.benchmark import FULL, Bench, plan_with

    plan = plan_with(FULL, trials=trials, draws=draws, tune_variants=True,
                     rescore_at=tuple(k for k in points if k < trials))
    if source is not None:
        seed = plan.tuning_seed
        for sub, pattern in (("models", f"*__b{seed}.*"), ("oracles", f"*__s{seed}.*")):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            for path in (source / sub).glob(pattern):
                if not (folder / sub / path.name).exists():
                    shutil.copy2(path, folder / sub / path.name)
    torch.set_num_threads(max(workers, 1))
    bench = Bench(plan, folder, show_bars=False)
    studies = [(b, mode, m) for b in plan.benchmarks for mode, one, two in TWINS for m in (one, two)]
    bench.tune_all(workers, studies)
    for benchmark in plan.benchmarks:
        for mode in ("full", "partial"):
            bench.tuning_floor(benchmark, mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--at", default="8,16,24,32,48,64", help="trial counts to read the curves at")
    parser.add_argument("--run", action="store_true", help="first tune the twin studies into the folder")
    parser.add_argument("--trials", type=int, default=64, help="trials per twin study, with --run")
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="a bench folder whose tuning-seed base models and oracles are reused")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--draws", type=int, default=3, help="tuning forget draws (protocol 5), with --run")
    args = parser.parse_args()
    if args.run:
        run_twins(args.folder, args.trials, args.source, args.workers, args.draws,
                  [int(k) for k in args.at.split(",")])
    records = [json.loads(p.read_text()) for p in sorted((args.folder / "tuning").glob("*.json"))]
    if not records:
        raise SystemExit(f"{args.folder}/tuning holds no study; fill it with mtu bench --tune-only")
    points = [int(k) for k in args.at.split(",")]
    curves = {(r["benchmark"], r["mode"], r["method"]): best_so_far(r) for r in records}

    def best_at(curve: list, k: int) -> float:
        value = curve[min(k, len(curve)) - 1] if curve else None
        return math.nan if value is None else float(value)

    rows = []
    for (benchmark, mode, method), curve in curves.items():
        final = best_at(curve, len(curve))
        found = next((i + 1 for i, v in enumerate(curve) if v is not None and v == final), None)
        rows.append({"benchmark": benchmark, "mode": mode, "method": method, "trials": len(curve),
                     "best_found_at": found, **{f"best@{k}": best_at(curve, k) for k in points},
                     "final": final})
    pd.set_option("display.width", 220)
    print("best tuning UIS v2 after k trials, per study (lower is better):")
    print(pd.DataFrame(rows).round(3).to_string(index=False), "\n")

    twins = []
    for benchmark in dict.fromkeys(r["benchmark"] for r in records):
        for mode, a, b in TWINS:
            if (benchmark, mode, a) in curves and (benchmark, mode, b) in curves:
                one, two = curves[(benchmark, mode, a)], curves[(benchmark, mode, b)]
                row = {"benchmark": benchmark, "mode": mode, "a": a, "b": b}
                for label, k in [*((str(k), k) for k in points), ("end", max(len(one), len(two)))]:
                    x, y = best_at(one, k), best_at(two, k)
                    row[f"gap%@{label}"] = 100 * abs(x - y) / min(x, y) if min(x, y) > 0 else math.nan
                twins.append(row)
    print("twin gaps after k trials (percent of the lower best; the last column at the studies' end):")
    print(pd.DataFrame(twins).round(1).to_string(index=False) if twins else "no twin pair in the folder")

    floors_file = args.folder / "tuning_floor.json"
    floors = json.loads(floors_file.read_text()) if floors_file.is_file() else {}
    studies = {(r["benchmark"], r["mode"], r["method"]): r for r in records}
    rescored = []
    for (benchmark, mode, method), record in studies.items():
        if "rescored" not in record:
            continue
        means = {k: v["mean"] for k, v in record.get("rescored_at", {}).items()}
        chosen = min((e for e in record["rescored"] if e["mean"] is not None), key=lambda e: e["mean"],
                     default=None)
        means["end"] = chosen["mean"] if chosen else None
        rescored.append({"benchmark": benchmark, "mode": mode, "method": method,
                         **{f"mean@{k}": v for k, v in means.items()}})
    if rescored:
        print("\nchosen configuration's mean UIS v2 over the draws, re-scored at k trials and at the end:")
        print(pd.DataFrame(rescored).round(3).to_string(index=False))
        print("\ntwin gaps of the re-scored means (UIS v2 points) against the tuning floor:")
        rows = []
        for benchmark in dict.fromkeys(r["benchmark"] for r in records):
            for mode, a, b in TWINS:
                one, two = studies.get((benchmark, mode, a)), studies.get((benchmark, mode, b))
                if not (one and two and "rescored" in one and "rescored" in two):
                    continue
                row = {"benchmark": benchmark, "mode": mode,
                       "floor": floors.get(f"{benchmark}__{mode}", math.nan)}
                for k in [*one.get("rescored_at", {}), "end"]:
                    x, y = (_mean_at(r, k) for r in (one, two))
                    row[f"gap@{k}"] = abs(x - y)
                    row[f"under_floor@{k}"] = abs(x - y) < row["floor"]
                rows.append(row)
        print(pd.DataFrame(rows).round(3).to_string(index=False) if rows else "no re-scored twin pair")


def _mean_at(record: dict, k: str) -> float:
    """The re-scored mean of a study's chosen configuration at budget k ("end": all trials)."""
    if k != "end":
        value = record.get("rescored_at", {}).get(k, {}).get("mean")
    else:
        finite = [e["mean"] for e in record["rescored"] if e["mean"] is not None]
        value = min(finite) if finite else None
    return math.nan if value is None else float(value)


if __name__ == "__main__":
    main()
