"""Time to validate, and to refuse, a forget request against a large training set, side by side
with the quadratic duplicate check it replaced (`list.count` per id), measured in the same run.

    python benchmarks/bench_requests.py [--ids 100000] [--reference-ids 10000]

The quadratic check is timed on a slice of --reference-ids ids (on all 100 k ids it took about two
minutes); its time on --ids ids is extrapolated as (ids / reference_ids)^2 times that.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.requests import ForgetRequest, RequestError  # noqa: E402

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
                        help="ids the quadratic reference is timed on")
    args = parser.parse_args()
    n, m = args.ids, args.reference_ids
    train = list(range(n + 1))
    valid = list(range(n, 0, -1))
    duplicate = list(range(1, n)) + [n - 1]
    unknown = list(range(1, n)) + [n + 7]
    rows = [("valid request", _seconds(lambda: ForgetRequest.build(valid, None, train, TASKS))),
            ("refused: one duplicate", _seconds(lambda: _refused(duplicate, train))),
            ("refused: one unknown id", _seconds(lambda: _refused(unknown, train)))]
    reference = _seconds(lambda: _quadratic_duplicates(duplicate[:m]))
    print(f"request of {n:,} instance ids against {n + 1:,} training ids")
    for label, seconds in rows:
        print(f"  now        {label:<24} {seconds:9.4f} s")
    print(f"  quadratic  duplicate check, {m:,} ids  {reference:9.4f} s  "
          f"(x{(n / m) ** 2:.0f} for {n:,} ids: ~{reference * (n / m) ** 2:.0f} s)")


if __name__ == "__main__":
    main()
