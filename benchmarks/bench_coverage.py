"""Coverage of the headline's 95% reduction interval on simulated benchmark groups.

Each simulated group has the full plan's shape (3 ratios x 5 forget sets (seeds) x the settings
of one mode). Every forget set draws one random effect that all its settings share, for the
baseline and, partly, for ours; each cell adds its own noise. Ours is 0.8 x the baseline in
expectation, so the true reduction of the means is known. For each way of resampling, it prints
how often the interval holds the true reduction (benchmarks/DECISIONS.md section 7):

- cells: the headline's former resampling, every cell on its own within its (ratio, setting),
  percentile interval;
- forget sets, percentile: every (ratio, seed) with all its settings, within its ratio;
- forget sets, studentized: the same draws, bootstrap-t interval (what the bench uses).

    .venv/bin/python benchmarks/bench_coverage.py --sims 4000 --draws 2000 [--protocol-5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from core.evaluation.stats import bootstrap_reduction

RATIO_UIS = np.array([6.0, 9.0, 12.0])
SETTING_SHIFT = np.array([0.0, 2.0, -1.0, 1.0])


def simulate(sims: int, settings: int, seeds: int = 5, skewed: bool = False, seed: int = 0, ratios: int = 3):
    """Baseline and ours (sims, ratios x seeds x settings), the true reduction (percent), and
    each cell's ratio, forget set and setting (cells,). `skewed`: multiplicative log-normal
    effects in place of additive normal ones. A forget set's shared effect stands for all that
    its cells share: its instances and, from protocol 4 on, its own base model."""
    rng = np.random.default_rng(seed)
    ratio, forget_set, setting = (a.ravel() for a in np.meshgrid(range(ratios), range(seeds), range(settings),
                                                                 indexing="ij"))
    mean = RATIO_UIS[ratio] + SETTING_SHIFT[setting]
    shared, own = rng.normal(size=(2, sims, ratios * seeds))[:, :, ratio * seeds + forget_set]
    noise = rng.normal(size=(2, sims, len(mean)))
    if skewed:
        baseline = mean * np.exp(0.3 * shared + 0.1 * noise[0])
        ours = 0.8 * mean * np.exp(0.24 * shared + 0.15 * own + 0.1 * noise[1])
        # E exp(N(0, v)) = exp(v / 2)
        expected_baseline = np.exp((0.3 ** 2 + 0.1 ** 2) / 2)
        expected_ours = 0.8 * np.exp((0.24 ** 2 + 0.15 ** 2 + 0.1 ** 2) / 2)
        truth = 100 * (expected_baseline - expected_ours) / expected_baseline
    else:
        baseline = mean + 2.0 * shared + 0.7 * noise[0]
        ours = 0.8 * mean + 1.6 * shared + own + 0.7 * noise[1]
        truth = 20.0
    return baseline, ours, truth, ratio, forget_set, setting


def coverages(sims: int, draws: int, settings: int, seeds: int, skewed: bool, seed: int,
              ratios: int = 3) -> dict[str, float]:
    baseline, ours, truth, ratio, forget_set, setting = simulate(sims, settings, seeds, skewed, seed, ratios)
    forget_sets, ratios = list(zip(ratio, forget_set)), list(ratio)
    ways = {"cells": dict(strata=list(zip(ratio, setting)), studentized=False),
            "forget sets, percentile": dict(clusters=forget_sets, strata=ratios, studentized=False),
            "forget sets, studentized": dict(clusters=forget_sets, strata=ratios)}
    out = {}
    for name, how in ways.items():
        _, low, high = bootstrap_reduction(baseline, ours, draws=draws, seed=seed + 1, **how)
        out[name] = 100 * float(np.mean((low <= truth) & (truth <= high)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sims", type=int, default=4000, help="simulated groups per row")
    parser.add_argument("--draws", type=int, default=2000, help="bootstrap draws per interval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--protocol-5", action="store_true", help="only protocol 5's shapes (one ratio)")
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"coverage of the nominal 95% interval, percent of {args.sims} simulated groups "
          f"({args.draws} draws each; its standard error is about "
          f"{100 * np.sqrt(0.95 * 0.05 / args.sims):.2f} points)\n")
    print("| cells: ratios x forget sets x settings | effects | cells (old) | forget sets, percentile "
          "| forget sets, studentized (new) |")
    print("|---|---|---|---|---|")
    # protocols 3-4's shapes (3 ratios), then protocol 5's (one ratio, 5 seeds, 1 or 2 settings:
    # full mode, conflict-high partial)
    shapes = ((3, 1, 5), (3, 2, 5), (3, 3, 5), (3, 4, 5), (3, 3, 10), (1, 1, 5), (1, 2, 5), (1, 1, 10))
    for ratios, settings, seeds in shapes[-3:] if args.protocol_5 else shapes:
        for skewed in (False, True):
            row = coverages(args.sims, args.draws, settings, seeds, skewed, args.seed, ratios)
            print(f"| {ratios} x {seeds} x {settings} | {'log-normal' if skewed else 'normal'} | "
                  + " | ".join(f"{value:.1f}" for value in row.values()) + " |")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
