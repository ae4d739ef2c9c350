"""Task geometry (`core.evaluation.geometry`) of small models trained on the synthetic benchmarks.

    python benchmarks/bench_geometry.py [--out /tmp/mtu-geometry] [--benchmarks synthetic-indoor,...]
        [--seed 0] [--retain-sample 64]

For each benchmark a small_cnn is trained with the recipe of `mtu bench --quick` (QUICK's
n_train, n_val, size, epochs and width; saved under --out and reused) and measured on the
forget set of the quick plan's first ratio and seed. Prints the time of each step, one summary
line per benchmark (`geometry_summary`) and the per-layer table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from core.checkpoints import checkpoint_paths, load_checkpoint, save_checkpoint
from core.evaluation.benchmark import QUICK, forget_instances
from core.evaluation.geometry import CONFLICT_THRESHOLD, geometry_summary, task_geometry
from core.training import TrainConfig, train_checkpoint
from core.unlearning import UnlearningData

DEFAULT = "synthetic-indoor,synthetic-conflict-low,synthetic-conflict-high"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("/tmp/mtu-geometry"))
    parser.add_argument("--benchmarks", default=DEFAULT)
    parser.add_argument("--retain-sample", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0, help="training seed of the models")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    pd.set_option("display.width", 200)
    for benchmark in args.benchmarks.split(","):
        path = args.out / f"{benchmark}-seed{args.seed}"
        if not checkpoint_paths(path)[1].is_file():
            start = time.perf_counter()
            model, card = train_checkpoint(QUICK.source(benchmark),
                                           {"name": "small_cnn", "args": {"width": QUICK.width}},
                                           TrainConfig(epochs=QUICK.epochs, seed=args.seed), show_bar=False)
            save_checkpoint(model, card, path)
            print(f"{benchmark}: trained in {time.perf_counter() - start:.0f} s")
        model, card = load_checkpoint(path)
        data = UnlearningData.from_card(card)
        start = time.perf_counter()
        frame = task_geometry(model, data, forget_instances(card.train_ids, QUICK.ratios[0], QUICK.seeds[0]),
                              retain_sample=args.retain_sample)
        summary = geometry_summary(frame, CONFLICT_THRESHOLD)
        print(f"{benchmark}: geometry in {time.perf_counter() - start:.1f} s; "
              + "; ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
        table = frame.assign(pair=frame["task"] + "/" + frame["other"])
        print(table.pivot_table(index="layer", columns=["measure", "pair"], values="value", sort=False)
              .round(2).to_string())
        print()


if __name__ == "__main__":
    main()
