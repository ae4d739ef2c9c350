"""Two processes against one on the same request: wall time of the run and the weights' gap.

    python benchmarks/bench_distributed.py [--threads 2] [--width 16] [--size 64] [--n-train 96]
        [--steps 10] [--epochs 2] [--methods interference_aware,gpm,retrain]

One small request (the first 8 training instances forgotten on every task of synthetic-street,
small_cnn) is run by each method in three ways: one process with `--threads` threads; one process
with half as many; and `torchrun --standalone --nproc_per_node 2` with half as many per process,
so the same cores as the first (core/distributed.py: each rank computes its share of every
batch). The middle column tells the sharing apart from threading: on a loaded machine one
process's threads wait for each other, which single-threaded processes do not. Each method first
runs once for a step (an epoch) untimed, so no timed run pays the first calls' set-up. The
methods run with SGD (the retrain oracle with the model's recipe, Adam).

Printed per method: seconds of the run itself (`UnlearnResult.seconds`, rank 0's; no start-up,
data or evaluation) in each way, the ratio 2 processes / 1 process with all the threads (below 1
is faster), and the largest weight difference between those two results; then the wall time of
each whole command (starting the processes and the process group included). One run of each,
side by side, on whatever else the machine is doing: on a machine of 2 cores another process's
load moves these figures by tens of percent.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
FORGET = 8


def _parent(args, folder: Path) -> Path:
    """A small trained checkpoint of synthetic-street (one epoch)."""
    from core.checkpoints import save_checkpoint
    from core.data.sources import DataSource
    from core.training import TrainConfig, train_checkpoint

    source = DataSource(benchmark="synthetic-street", n_train=args.n_train, n_val=48,
                        size=(args.size, args.size))
    model, card = train_checkpoint(source, {"name": "small_cnn", "args": {"width": args.width}},
                                   TrainConfig(epochs=1, batch_size=16, device="cpu"))
    path = folder / "parent"
    save_checkpoint(model, card, path)
    return path


def _child(args) -> None:
    """One rank (or the one process): run every method on the request, save each result's
    weights and print {method: seconds} on rank 0."""
    from core import distributed
    from core.checkpoints import load_checkpoint
    from core.requests import ForgetRequest
    from core.unlearning import UnlearningData, get_unlearner

    torch.set_num_threads(args.threads)
    out = Path(args.child)
    with distributed.session("cpu"):
        model, card = load_checkpoint(out / "parent")
        data = UnlearningData.from_card(card)
        request = ForgetRequest.build(card.train_ids[:FORGET], None, data.train_ids, list(model.tasks))
        seconds = {}
        for method in args.methods.split(","):
            config = ({"epochs": args.epochs, "device": "cpu"} if method == "retrain" else
                      {"steps": args.steps, "retain_batch": 32, "forget_batch": FORGET,
                       "optimizer": "sgd", "lr": 1e-2, "device": "cpu"})
            warm = {**config, "epochs": 1} if method == "retrain" else {**config, "steps": 1}
            get_unlearner(method, warm).run(model, request, data)  # first calls' set-up, untimed
            result = get_unlearner(method, config).run(model, request, data)
            seconds[method] = result.seconds
            if distributed.is_main():
                name = f"{method}-{distributed.world_size()}x{args.threads}.pt"
                torch.save(result.model.state_dict(), out / name)
        if distributed.is_main():
            print("SECONDS " + json.dumps(seconds), flush=True)


def _launch(args, folder: Path, processes: int, threads: int) -> tuple[dict[str, float], float]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(folder),
               "--threads", str(threads), "--methods", args.methods, "--steps", str(args.steps),
               "--epochs", str(args.epochs)]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc_per_node", str(processes), *command[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("SECONDS "))
    return json.loads(line.removeprefix("SECONDS ")), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads in all (split among ranks)")
    parser.add_argument("--width", type=int, default=16, help="small_cnn width")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--n-train", type=int, default=96)
    parser.add_argument("--steps", type=int, default=10, help="steps of the unlearning methods")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of the retrain oracle")
    parser.add_argument("--methods", default="interference_aware,gpm,retrain")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        os.environ.setdefault("MTU_CACHE_DIR", str(folder / "cache"))
        torch.set_num_threads(args.threads)
        _parent(args, folder)
        half = max(1, args.threads // 2)
        runs = {"1 process": (1, args.threads), f"1 process, {half} thr": (1, half),
                "2 processes": (2, half)}
        found = {label: _launch(args, folder, *shape) for label, shape in runs.items()}
        print(f"request: forget {FORGET} of {args.n_train} synthetic-street instances on every task; "
              f"small_cnn width {args.width}, {args.size}x{args.size}; torch {torch.__version__}, "
              f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} after the runs")
        print("seconds of each run (1 process: --threads threads; 2 processes: half as many each);"
              " ratio = 2 processes / 1 process (below 1: faster)")
        print(f"{'method':<20}" + "".join(f"{label:>20}" for label in runs)
              + f"{'ratio':>8}{'max |w2 - w1|':>15}")
        one, two = f"1x{args.threads}", f"2x{half}"
        for method in args.methods.split(","):
            gap = max(float((a.double() - b.double()).abs().max()) for a, b in
                      zip(torch.load(folder / f"{method}-{one}.pt").values(),
                          torch.load(folder / f"{method}-{two}.pt").values()))
            times = [found[label][0][method] for label in runs]
            print(f"{method:<20}" + "".join(f"{t:>20.2f}" for t in times)
                  + f"{times[2] / times[0]:>8.2f}{gap:>15.1e}")
        walls = [found[label][1] for label in runs]
        print(f"{'whole command':<20}" + "".join(f"{t:>20.1f}" for t in walls)
              + f"{walls[2] / walls[0]:>8.2f}")

if __name__ == "__main__":
    main()
