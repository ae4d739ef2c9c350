"""N concurrent `mtu unlearn` processes on one original model and one ledger: throughput, and
that nothing is lost (ledger rows = requests, every run done, every checkpoint loads and matches
its card, the original is byte-identical).

    python benchmarks/bench_ledger.py [--requests 8] [--parallel 4] [--steps 3]

Runs in a temporary MTU_HOME with a copy of the street sample model, so the user's ledger is
left alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.checkpoints import SAMPLE_MODELS_DIR, load_checkpoint  # noqa: E402
from core.ledger import Ledger  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--parallel", type=int, default=4, help="processes at once")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        home = Path(folder)
        model = home / "street"
        for suffix in (".json", ".safetensors"):
            source = SAMPLE_MODELS_DIR / f"synthetic-street{suffix}"
            (home / f"street{suffix}").write_bytes(source.read_bytes())
        original = model.with_suffix(".safetensors").read_bytes()
        env = {**os.environ, "MTU_HOME": str(home), "OMP_NUM_THREADS": "1"}
        running: list[subprocess.Popen] = []
        failed = 0
        start = time.perf_counter()
        for index in range(args.requests):
            while len(running) >= args.parallel:
                failed += sum(p.wait() != 0 for p in running[:1])
                running = running[1:]
            running.append(subprocess.Popen(
                [sys.executable, "-m", "core.cli", "unlearn", "--model", str(model), "--instances",
                 f"{3 + index}", "--method", "grad_ascent", "--set", f"steps={args.steps}", "--device",
                 "cpu", "--reason", f"load test {index}", "--out", str(home / f"out{index}")],
                cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        failed += sum(p.wait() != 0 for p in running)
        seconds = time.perf_counter() - start
        rows = Ledger(home / "ledger.sqlite").runs()
        loads = 0
        for row in rows:
            _, card = load_checkpoint(row["result_path"])
            loads += card.weights_sha256 == row["result_sha256"]
        print(f"{args.requests} requests, {args.parallel} processes at once, {args.steps} steps each, "
              f"CPU, {os.cpu_count()} cores")
        print(f"wall {seconds:.1f} s, throughput {args.requests / seconds:.2f} requests/s; "
              f"failed processes {failed}")
        intact = model.with_suffix(".safetensors").read_bytes() == original
        print(f"ledger rows {len(rows)} (requests {args.requests}); done "
              f"{sum(r['status'] == 'done' for r in rows)}; checkpoints that load and match their card "
              f"{loads}; original byte-identical: {intact}")


if __name__ == "__main__":
    main()
