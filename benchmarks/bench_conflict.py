"""Time `analyze_conflicts` on the indoor sample model: 10 forget instances, full-task and
partial-task (forget depth), 32 retain instances, shared parameters.

    python benchmarks/bench_conflict.py [--threads 2] [--repeats 3]

The issue's target: under 5 s per analysis on 2 CPU cores (warm-up once, then median of 3).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from core import load_sample
from core.evaluation import analyze_conflicts
from core.requests import ForgetRequest
from core.unlearning import UnlearningData


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--forget", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, card = load_sample("synthetic-indoor")
    data = UnlearningData.from_card(card)
    ids, names = list(data.train.ids), list(data.train.tasks)
    for label, tasks in (("full-task", None), ("partial-task (depth)", ["depth"])):
        request = ForgetRequest.build(ids[:args.forget], tasks, ids, names)
        analyze_conflicts(model, request, data)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            analyze_conflicts(model, request, data)
            times.append(time.perf_counter() - start)
        print(f"conflict analysis, {args.forget} forget instances, {label}: "
              f"{statistics.median(times):.2f} s (target < 5 s)")


if __name__ == "__main__":
    main()
