"""Where interference_aware's two parts should run, read from a bench's tuning studies alone.

Every study ran on the tuning seed and was scored on the tuning part of val (never on test), so
this reads no reported seed. It prints, per benchmark and mode, the mean of the studies' best UIS
for each placement of TGP and IGO that the variants' studies cover (benchmarks/DECISIONS.md
section 6), and how many studies the by-mode placement wins against both parts in every mode.

With `--rerun FOLDER` (a later results folder), it also checks that the studies of
`interference_aware` and `interference_aware_both` there chose what the first folder's equal
studies chose: ours in full mode = `interference_aware_no_tgp`, in partial mode =
`interference_aware_no_igo`; `interference_aware_both` = the first folder's `interference_aware`
(run 1's method).

    .venv/bin/python benchmarks/bench_placement.py ~/.cache/mtunlearn/bench \
        --rerun ~/.cache/mtunlearn/bench-run2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

BOTH, NO_TGP, NO_IGO = "interference_aware", "interference_aware_no_tgp", "interference_aware_no_igo"
"""In run 1's folder `interference_aware` had both parts in every mode."""


def placements(tuning: pd.DataFrame) -> pd.DataFrame:
    """Per study, the best UIS of each placement, from the studies of run 1's three variants."""
    table = tuning.pivot_table(index=["benchmark", "ratio", "setting"], columns="method",
                               values="best_uis")
    full = table.index.get_level_values("setting") == "full"
    return pd.DataFrame({
        "both parts in every mode": table[BOTH],
        "IGO only": table[NO_TGP],
        "TGP only": table[NO_IGO],
        "by mode: IGO full, TGP partial": table[NO_TGP].where(full, table[NO_IGO]),
        "by mode: TGP full, IGO partial": table[NO_IGO].where(full, table[NO_TGP]),
        "gpm": table["gpm"], "gpm_calibrated": table["gpm_calibrated"]})


def rerun_check(first: Path, second: Path) -> list[str]:
    """One line per re-run study: its counterpart in `first`, whether the choice is the same,
    and the relative difference of their best UIS."""
    lines = []
    for path in sorted((second / "tuning").glob(f"*__{BOTH}.json")) + sorted(
            (second / "tuning").glob("*__interference_aware_both.json")):
        record = json.loads(path.read_text())
        if record["method"] == BOTH:
            twin = NO_TGP if record["setting"] == "full" else NO_IGO
        else:
            twin = BOTH
        stem = path.name.rsplit("__", 1)[0]
        counterpart = first / "tuning" / f"{stem}__{twin}.json"
        if not counterpart.is_file():
            lines.append(f"{stem} {record['method']} = {twin}: no such study in {first} (not checked)")
            continue
        other = json.loads(counterpart.read_text())
        same = record["chosen"] == other["chosen"]
        gap = abs(record["best_uis"] - other["best_uis"]) / abs(other["best_uis"])
        lines.append(f"{stem} {record['method']} = {twin}: same choice {same}, best UIS "
                     f"{record['best_uis']:.4f} / {other['best_uis']:.4f} ({100 * gap:.2f}%)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="run 1's results folder (tuning.csv)")
    parser.add_argument("--rerun", type=Path, default=None, help="a later folder to check")
    args = parser.parse_args()
    for folder in (args.folder, args.rerun):
        if folder is not None and not (folder / "tuning.csv").is_file():
            parser.error(f"{folder} holds no tuning.csv; pass a folder `mtu bench` wrote")
    tuning = pd.read_csv(args.folder / "tuning.csv")
    missing = {BOTH, NO_TGP, NO_IGO, "gpm", "gpm_calibrated"} - set(tuning["method"])
    if missing:
        parser.error(f"{args.folder} has no studies of {', '.join(sorted(missing))}; it needs run 1's "
                     "methods (interference_aware with both parts, its no_tgp / no_igo variants, gpm)")
    table = placements(tuning)
    mode = pd.Series(["full" if s == "full" else "partial"
                      for s in table.index.get_level_values("setting")], index=table.index)
    groups = table.groupby([table.index.get_level_values("benchmark"), mode.to_numpy()])
    pd.set_option("display.width", 200)
    print("mean best UIS over the tuning seed's studies (lower is better):")
    print(groups.mean().T.round(2).to_string())
    print("\nmean over all studies:")
    print(table.mean().round(2).to_string())
    wins = (table["by mode: IGO full, TGP partial"] < table["both parts in every mode"])
    print("\nstudies where by mode (IGO full, TGP partial) beats both in every mode:")
    print(wins.groupby([table.index.get_level_values("benchmark"), mode.to_numpy()])
          .agg(["sum", "count"]).to_string())
    print(f"in all: {int(wins.sum())} of {len(wins)}")
    if args.rerun is not None:
        lines = rerun_check(args.folder, args.rerun)
        print("\nre-run studies against their equals:")
        print("\n".join(lines))
        gaps = [float(line.rsplit("(", 1)[1].rstrip("%)")) for line in lines if line.endswith("%)")]
        print(f"{sum('same choice True' in line for line in lines)} of {len(lines)} chose the same; "
              f"largest best-UIS difference {max(gaps, default=float('nan')):.2f}%")


if __name__ == "__main__":
    main()
