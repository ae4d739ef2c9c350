import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from core.evaluation.stats import (
    abs_interval,
    bootstrap_auc,
    bootstrap_mean,
    bootstrap_reduction,
    paired_comparisons,
    verdict_at_least,
    verdict_at_most,
    wilcoxon_p,
)


def test_verdicts_read_the_interval():
    assert verdict_at_least(36.0, 50.0, 35.0) == "met"
    assert verdict_at_least(20.0, 34.9, 35.0) == "missed"
    assert verdict_at_least(30.0, 40.0, 35.0) == "undecided"
    assert verdict_at_least(math.nan, math.nan, 35.0) == "undecided"
    assert verdict_at_most(0.01, 0.04, 0.05) == "met"
    assert verdict_at_most(0.06, 0.2, 0.05) == "missed"
    assert verdict_at_most(0.0, 0.08, 0.05) == "undecided"
    assert abs_interval(-0.03, 0.07) == (0.0, 0.07)
    assert abs_interval(-0.09, -0.02) == (0.02, 0.09)
    assert abs_interval(0.01, 0.02) == (0.01, 0.02)


def test_bootstrap_mean_and_reduction():
    mean, low, high = bootstrap_mean([1.0, 2.0, 3.0, 4.0, math.nan])
    assert mean == 2.5 and 1.0 <= low < 2.5 < high <= 4.0
    assert bootstrap_mean([1.0, 2.0]) == bootstrap_mean([1.0, 2.0])  # fixed seed
    assert math.isnan(bootstrap_mean([3.0])[1]) and bootstrap_mean([3.0])[0] == 3.0
    # one cell per stratum: nothing to resample, no interval
    assert math.isnan(bootstrap_mean([1.0, 5.0], strata=["a", "b"])[1])
    # baseline means 10, ours 5 -> 50%; every cell halves UIS, so every resample gives 50% too
    reduction, low, high = bootstrap_reduction([8.0, 12.0, 10.0], [4.0, 6.0, 5.0])
    assert (reduction, low, high) == pytest.approx((50.0, 50.0, 50.0))
    # strata keep each stratum's cells: ratios of means per resample stay within [20%, 60%]
    reduction, low, high = bootstrap_reduction([10, 10, 10, 10], [8, 8, 4, 4], ["a", "a", "b", "b"])
    assert reduction == pytest.approx(40.0) and (low, high) == pytest.approx((40.0, 40.0))
    reduction, low, high = bootstrap_reduction([10, 10, 10, 10], [8, 4, 8, 4], ["a", "a", "b", "b"])
    assert reduction == pytest.approx(40.0) and low == pytest.approx(20.0) and high == pytest.approx(60.0)
    with pytest.raises(ValueError, match="shapes"):
        bootstrap_reduction([1.0, 2.0], [1.0])


def test_bootstrap_auc_counts_ties_as_half():
    auc, low, high = bootstrap_auc([3.0, 2.0], [1.0, 2.0])
    # pairs: 3>1, 3>2, 2>1, 2=2 -> (1 + 1 + 1 + 0.5) / 4
    assert auc == pytest.approx(0.875) and 0.5 <= low <= auc <= high <= 1.0
    assert math.isnan(bootstrap_auc([], [1.0])[0])


def test_paired_comparisons_by_hand():
    rows = []
    for seed, (ours, a, b) in enumerate([(4.0, 8.0, 4.0), (5.0, 10.0, 6.0), (6.0, 12.0, 5.0)]):
        rows += [("x", "full", 0.1, "full", seed, "ours", ours), ("x", "full", 0.1, "full", seed, "a", a),
                 ("x", "full", 0.1, "full", seed, "b", b)]
    board = pd.DataFrame(rows, columns=["benchmark", "mode", "ratio", "setting", "seed", "model", "uis"])
    table = paired_comparisons(board, "ours", ["a", "b"]).set_index("baseline")
    assert table.loc["a", ["cells", "wins", "ties", "losses"]].tolist() == [3, 3, 0, 0]
    assert table.loc["b", ["wins", "ties", "losses"]].tolist() == [1, 1, 1]
    # a halves every cell: 50% each
    assert table.loc["a", "mean_reduction_pct"] == pytest.approx(50.0)
    assert table.loc["a", ["reduction_low", "reduction_high"]].tolist() == pytest.approx([50.0, 50.0])
    # b: reductions 0, 100/6, -20 -> mean -1.11
    assert table.loc["b", "mean_reduction_pct"] == pytest.approx((0 + 100 / 6 - 20) / 3)
    assert table.loc["a", "wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon([4.0, 5.0, 6.0]).pvalue)
    assert math.isnan(wilcoxon_p([0.0, 0.0]))
    assert np.isfinite(table.loc["b", "wilcoxon_p"])
