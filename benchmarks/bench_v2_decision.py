"""interference_aware v2's parts, read from a bench's tuning studies alone (issue 20).

Every study ran on the tuning seed's base model and requests and was scored by UIS v2 on the
tuning part of val against each request's oracle (never on test, never on a reported seed).
This prints, per benchmark and mode, each candidate's best tuning score (lower is better), and
for each v2 part the difference between v2 and v2 without that part (negative: the part
helps on the tuning seed), which is what benchmarks/DECISIONS.md records before any reporting
run. With equal budgets, a best-of-16 difference smaller than about 5% of the score is noise
(protocol 3's audit: best-of-4 against best-of-16 moved UIS by 2.4-6.7 points).

    .venv/bin/python benchmarks/bench_v2_decision.py /work/bench-v2

It also applies DECISIONS 12's rule (`rule`): each candidate's best divided by the strongest
existing baseline's best in the group, averaged over the groups; the lowest mean is the
candidate. The names are the candidates' as registered when the studies ran (f607af7); since
DECISIONS 17 `interference_aware_v2_metric` is `interference_aware` and the others are its
variants, so the script reads folders of that time (benchmarks/runs/run4-v2 with run 4's).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

CANDIDATES = ("interference_aware", "interference_aware_both", "interference_aware_v2",
              "interference_aware_v2_metric", "interference_aware_v2_joint", "interference_aware_v2_every",
              "interference_aware_v2_retain_igo", "gpm", "scrub")
PARTS = {"separate repair": "interference_aware_v2_joint",
         "kept-task output basis": "interference_aware_v2_every",
         "IGO against the kept pairs": "interference_aware_v2_retain_igo"}


def scores(folder: Path) -> pd.DataFrame:
    """Best tuning UIS v2 per (benchmark, mode) and method, from tuning/*.json."""
    records = [json.loads(p.read_text()) for p in sorted((folder / "tuning").glob("*.json"))]
    frame = pd.DataFrame([{"benchmark": r["benchmark"], "mode": r["mode"], "method": r["method"],
                           "best": r["best_uis"], "still_improving": r.get("still_improving")}
                          for r in records])
    return frame.pivot_table(index=["benchmark", "mode"], columns="method", values="best")


EXISTING = ("adam_nscl", "gpm", "head_refit", "l1_sparse", "neggrad_plus", "orthograd", "random_label",
            "salun", "scrub", "sgp")
"""The existing baselines the strongest one is taken from (not ours, its variants, the controls)."""


def rule(table: pd.DataFrame) -> pd.DataFrame:
    """Per candidate (every `interference_aware*` study), its best over the strongest existing
    baseline's best in each (benchmark, mode), and the mean of those ratios, lowest first."""
    strongest = table[[m for m in EXISTING if m in table]].min(axis=1)
    ratios = table[[m for m in table if m.startswith("interference_aware")]].div(strongest, axis=0).T
    ratios.columns = [f"{b} {mode}" for b, mode in ratios.columns]
    return ratios.assign(mean=ratios.mean(axis=1)).sort_values("mean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--promoted", type=Path, default=None,
                        help="a later folder whose interference_aware is the promoted v2_metric "
                             "(run 5's): its best tuning scores beside v2_metric's, the same method "
                             "tuned twice")
    args = parser.parse_args()
    from core.evaluation.ablations import twin_gaps
    from core.evaluation.tuning import tuning_table

    records = [json.loads(p.read_text()) for p in sorted((args.folder / "tuning").glob("*.json"))]
    print("tuning luck (the same method tuned twice, different sampler seeds):")
    print(twin_gaps(tuning_table(records)).round(3).to_string(index=False), "\n")
    table = scores(args.folder)
    present = [m for m in CANDIDATES if m in table]
    pd.set_option("display.width", 200)
    print("best tuning UIS v2 per study (lower is better):")
    print(table[present].round(3).to_string())
    if "interference_aware_v2" in table:
        print("\nv2 - v2 without the part (negative: the part helps on the tuning seed):")
        diffs = pd.DataFrame({part: table["interference_aware_v2"] - table[other]
                              for part, other in PARTS.items() if other in table})
        if "interference_aware_v2_metric" in table:
            diffs["metric-space target (v2_metric - v2)"] = (table["interference_aware_v2_metric"]
                                                             - table["interference_aware_v2"])
        print(diffs.round(3).to_string())
    if "interference_aware_v2_retain_igo" in table and "interference_aware_v2" in table:
        full = table.xs("full", level="mode")
        print("\ntuning luck: v2 and v2_retain_igo run the same code in full mode (no kept pairs):")
        luck = (full["interference_aware_v2"] - full["interference_aware_v2_retain_igo"]).abs()
        print(luck.round(3).to_string())
    print("\nthe rule (DECISIONS 12): best / the strongest existing baseline's best, mean over groups:")
    print(rule(table).round(2).to_string())
    if args.promoted is not None and "interference_aware_v2_metric" in table:
        again = scores(args.promoted)["interference_aware"]
        twice = pd.DataFrame({"v2_metric": table["interference_aware_v2_metric"], "promoted": again})
        print("\nthe promoted method tuned again under its own name (the same space and budget):")
        print(twice.assign(gap=(twice["v2_metric"] - twice["promoted"]).abs()).round(2).to_string())


if __name__ == "__main__":
    main()
