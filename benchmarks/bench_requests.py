"""Time to validate, and to refuse, a forget request against a large training set, side by side
with the quadratic checks it replaced, measured in the same run: the duplicate check (`list.count`
per id) and typed ranges (one set of the training ids built per range).

    python benchmarks/bench_requests.py [--ids 100000] [--reference-ids 10000] [--reference-ranges 1000]

The quadratic checks are timed on --reference-ids ids and --reference-ranges ranges only (the
duplicate check on all 100 k ids took about two minutes) and extrapolated: x(ids / reference_ids)^2
for duplicates, x(ranges / reference_ranges) for ranges (each costs one pass over the training ids).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.cli import _instances  # noqa: E402
from core.requests import ForgetRequest, RequestError, parse_ids  # noqa: E402

TASKS = ("segmentation", "depth", "normal")


def _seconds(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _refused(instances, train_ids) -> None:
    try:
        ForgetRequest.build(instances, None, train_ids, TASKS)
    except RequestError:
        return
    raise AssertionError("the request was not refused")


def _quadratic_duplicates(instances: list[int]) -> list[int]:
    """The duplicate check as it was: one `list.count` per id."""
    return sorted({i for i in instances if instances.count(i) > 1})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=100_000, help="training ids (and request size)")
    parser.add_argument("--reference-ids", type=int, default=10_000,
                        help="ids the quadratic duplicate check is timed on")
    parser.add_argument("--reference-ranges", type=int, default=1_000,
                        help="typed ranges the one-set-per-range reference is timed on")
    args = parser.parse_args()
    n, m, r = args.ids, args.reference_ids, args.reference_ranges
    train = list(range(n + 1))
    valid = list(range(n, 0, -1))
    duplicate = list(range(1, n)) + [n - 1]
    unknown = list(range(1, n)) + [n + 7]
    rows = [("valid request", _seconds(lambda: ForgetRequest.build(valid, None, train, TASKS))),
            ("refused: one duplicate", _seconds(lambda: _refused(duplicate, train))),
            ("refused: one unknown id", _seconds(lambda: _refused(unknown, train)))]
    ranges = [f"{2 * i}-{2 * i + 1}" for i in range(n // 2)]
    rows.append((f"{len(ranges):,} typed ranges", _seconds(lambda: _instances(", ".join(ranges), train))))
    reference = _seconds(lambda: _quadratic_duplicates(duplicate[:m]))
    per_range = _seconds(lambda: [parse_ids(token, train) for token in ranges[:r]])
    print(f"request of {n:,} instance ids against {n + 1:,} training ids")
    for label, seconds in rows:
        print(f"  now        {label:<34} {seconds:9.4f} s")
    print(f"  quadratic  {f'duplicate check, {m:,} ids':<34} {reference:9.4f} s  "
          f"(x{(n / m) ** 2:.0f} for {n:,} ids: ~{reference * (n / m) ** 2:.0f} s)")
    print(f"  quadratic  {f'one set per range, {r:,} ranges':<34} {per_range:9.4f} s  "
          f"(x{len(ranges) / r:.0f} for {len(ranges):,} ranges: ~{per_range * len(ranges) / r:.0f} s)")


if __name__ == "__main__":
    main()
