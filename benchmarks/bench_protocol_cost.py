"""What a tuning protocol would cost, projected from the trials a finished bench folder measured.

Every trial of a study records its wall seconds and its configuration. Per study this fits
seconds = a + b x steps (least squares on its trials; a method without a steps knob takes its
mean), divides by the requests the study scored per trial, and projects a plan: the expected
seconds of one request at a steps range's mean (log-uniform, what random search draws), times
the requests each study would score (every ratio, the partial settings kept), times the runs of
a study (`trials` searched plus `top` x (`draws` - 1) re-scorings), plus the widening rounds at
the folder's measured rate. The tuning seed's oracles and the reported cells are not in it; the
folder's own cell seconds are printed beside it.

    .venv/bin/python benchmarks/bench_protocol_cost.py /work/bench-run3

The options are the plans to compare; the figures are projections, not measurements.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from core.unlearning.ablations import VARIANTS

SANITY = ("finetune", "grad_ascent", "pcgrad", "ssd")
CONTROLS = ("gpm_calibrated", "neggrad_plus_calibrated")


def log_mean(low: float, high: float) -> float:
    """The mean of a log-uniform draw on [low, high]."""
    return (high - low) / math.log(high / low)


def per_request_fit(record: dict) -> tuple[float, float]:
    """(a, b) of seconds = a + b x steps for one request of this study's trials."""
    trials = [t for t in record["trials"] if t.get("seconds") is not None]
    seconds = np.array([t["seconds"] for t in trials], float) / record.get("requests", 1)
    if not trials or "steps" not in trials[0]["params"]:
        return float(seconds.mean()) if len(seconds) else 0.0, 0.0
    steps = np.array([t["params"]["steps"] for t in trials], float)
    a, b = np.linalg.lstsq(np.vstack([np.ones_like(steps), steps]).T, seconds, rcond=None)[0]
    return max(float(a), 0.0), max(float(b), 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    records = [json.loads(p.read_text()) for p in sorted((args.folder / "tuning").glob("*.json"))]
    if not records:
        raise SystemExit(f"{args.folder}/tuning holds no study; pass a finished bench folder")
    measured = sum(t["seconds"] for r in records for t in r["trials"])
    widening = sum(r["extra_trials"] for r in records) / sum(r["budget"] for r in records)
    cells = sum(json.loads(p.read_text()).get("wall_seconds", 0.0)
                for p in (args.folder / "cells").glob("*.json"))
    print(f"{args.folder.name}: {len(records)} studies, {measured:.0f} s of trials measured; widening "
          f"added {100 * widening:.0f}% trials; the cells took {cells:.0f} s (worker seconds)\n")
    fits = {(r["benchmark"], r["mode"], r["method"]): (per_request_fit(r), r.get("requests", 1))
            for r in records}
    groups = {"ours": ["interference_aware"], "v1 variants": [v for v in VARIANTS if "v2" not in v
                                                               and v != "interference_aware"],
              "controls": list(CONTROLS), "sanity tier": list(SANITY)}
    named = {m for ms in groups.values() for m in ms}
    groups["existing baselines"] = sorted({m for _, _, m in fits} - named)
    plans = {  # name: (steps range, trials, draws, top, partial settings kept per benchmark or None = all)
        "run 3 (5-60, 16 trials, 1 draw)": ((5, 60), 16, 1, 0, None),
        "protocol 5 as recorded (5-240, 16 trials, 3 draws each)": ((5, 240), 48, 1, 0, None),
        "5-240, 16 trials + top 4 on 2 more draws": ((5, 240), 16, 3, 4, None),
        "5-240, 24 trials + top 4 on 2 more draws": ((5, 240), 24, 3, 4, None),
        "5-240, 32 trials + top 4 on 2 more draws": ((5, 240), 32, 3, 4, None),
        "5-240, 24 trials + top 4 on 2 more draws, indoor partial 1 setting": ((5, 240), 24, 3, 4, 1),
        "5-240, 32 trials + top 4 on 2 more draws, indoor partial 1 setting": ((5, 240), 32, 3, 4, 1),
    }
    rows = []
    for plan, (steps, trials, draws, top, partial_kept) in plans.items():
        cost: dict[str, float] = defaultdict(float)
        for (benchmark, mode, method), ((a, b), requests) in fits.items():
            group = next(g for g, ms in groups.items() if method in ms)
            if partial_kept is not None and mode == "partial" and "indoor" in benchmark:
                requests = min(requests, partial_kept)
            runs = trials * (1 + widening) + top * (draws - 1)
            cost[group] += (a + b * log_mean(*steps)) * requests * runs
        rows.append({"plan": plan, **{g: round(cost[g] / 60) for g in groups},
                     "all (min, worker)": round(sum(cost.values()) / 60),
                     f"without sanity + v1 variants (h, wall on {args.workers})":
                         round((sum(cost.values()) - cost["sanity tier"] - cost["v1 variants"])
                               / 3600 / args.workers, 2)})
    pd.set_option("display.width", 250)
    print("projected tuning minutes (worker seconds / 60) per group of methods:")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
