"""Time one training step (forward + backward + Adam) of the default model, batch 32 at 64x64.

    python benchmarks/bench_train_step.py [--threads 2] [--width 32] [--steps 20]

The issue's target: well under 0.2 s per step on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import time

import torch

from core.models import build_model
from core.tasks import TaskSpec

INDOOR = [TaskSpec("segmentation", "segmentation", 7), TaskSpec("depth", "depth", 1),
          TaskSpec("normal", "normal", 3)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--backbone", default="small_cnn", help="a registered architecture")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model({"name": args.backbone, "args": {"width": args.width}}, INDOOR)
    model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(32, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    targets = {"segmentation": torch.randint(-1, 7, (32, 64, 64)),
               "depth": torch.rand(32, 1, 64, 64) * 5,
               "normal": torch.nn.functional.normalize(torch.randn(32, 3, 64, 64), dim=1)}

    def step() -> None:
        out = model(x)
        loss = sum(task.loss(out[task.name], targets[task.name]) for task in INDOOR)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    times.sort()
    params = sum(p.numel() for p in model.parameters())
    print(f"{args.backbone} width {args.width} ({params / 1e6:.2f} M params), batch 32 at 64x64, "
          f"{args.threads} threads: median step {times[len(times) // 2] * 1000:.0f} ms, "
          f"min {times[0] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
