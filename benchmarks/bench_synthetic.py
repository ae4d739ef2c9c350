"""Time the generation of the default synthetic benchmarks.

    python benchmarks/bench_synthetic.py [--workers N] [--out DIR]

Prints one line per benchmark, e.g.
``synthetic-indoor: 800+600 images 64x64 in 23.4 s (59.8 img/s, 2 workers)``.
The sets are written to a temporary folder and removed, unless --out keeps them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from core.data.synthetic import BENCHMARKS, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    parser.add_argument("--out", type=Path, default=None, help="keep the sets in this folder")
    parser.add_argument("--n-train", type=int, default=800)
    parser.add_argument("--n-val", type=int, default=600)
    args = parser.parse_args()
    workers = args.workers or os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for name in BENCHMARKS:
            start = time.perf_counter()
            generate(name, out / name, n_train=args.n_train, n_val=args.n_val, size=(64, 64),
                     workers=workers)
            seconds = time.perf_counter() - start
            count = args.n_train + args.n_val
            print(f"{name}: {args.n_train}+{args.n_val} images 64x64 in {seconds:.1f} s "
                  f"({count / seconds:.1f} img/s, {workers} workers)", flush=True)


if __name__ == "__main__":
    main()
