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
    cluster_keys,
    cluster_ratio,
    holm,
    paired_comparisons,
    reduction_verdicts,
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
    # percentile, cells as units within strata: ratios of means per resample stay within [20%, 60%]
    reduction, low, high = bootstrap_reduction([10, 10, 10, 10], [8, 8, 4, 4], strata=["a", "a", "b", "b"],
                                               studentized=False)
    assert reduction == pytest.approx(40.0) and (low, high) == pytest.approx((40.0, 40.0))
    reduction, low, high = bootstrap_reduction([10, 10, 10, 10], [8, 4, 8, 4], strata=["a", "a", "b", "b"],
                                               studentized=False)
    assert reduction == pytest.approx(40.0) and low == pytest.approx(20.0) and high == pytest.approx(60.0)
    # two clusters: a draw of one cluster twice has no spread, t* is infinite: no bound
    assert bootstrap_reduction([10.0, 10.0], [4.0, 6.0])[0] == pytest.approx(50.0)
    assert np.isnan(bootstrap_reduction([10.0, 10.0], [4.0, 6.0])[1:]).all()
    with pytest.raises(ValueError, match="shapes"):
        bootstrap_reduction([1.0, 2.0], [1.0])


def test_a_forget_set_is_resampled_with_all_its_settings():
    # two forget sets (seeds) x two settings, baseline 10 everywhere; ours 5 / 4 on seed 1 and 3 / 6
    # on seed 2: each forget set's mean is 4.5, so every draw of forget sets gives 55%
    baseline, ours = [10.0] * 4, [5.0, 4.0, 3.0, 6.0]
    seeds, settings = [1, 1, 2, 2], ["p:a", "p:b", "p:a", "p:b"]
    assert bootstrap_reduction(baseline, ours, seeds) == pytest.approx((55.0, 55.0, 55.0))
    # cells as independent units within settings: ours' mean is 3.5..5.5 -> [45%, 65%]
    assert bootstrap_reduction(baseline, ours, strata=settings, studentized=False) == pytest.approx(
        (55.0, 45.0, 65.0))
    with pytest.raises(ValueError, match="same stratum"):
        cluster_ratio(ours, baseline, clusters=seeds, strata=settings)
    cells = pd.DataFrame({"ratio": [0.1, 0.1, 0.5], "setting": ["full", "p:a", "full"], "seed": [1, 1, 1]})
    assert cluster_keys(cells) == ([(0.1, 1), (0.1, 1), (0.5, 1)], [0.1, 0.1, 0.5])
    # a base-model seed that varies is the cluster: all of one base model's cells go together
    assert cluster_keys(cells.assign(base_seed=[0, 0, 1])) == ([0, 0, 1], None)
    assert cluster_keys(cells.assign(base_seed=0)) == cluster_keys(cells)


def _correlated_cells(sims: int, seed: int = 0):
    """`sims` simulated benchmark groups of the full plan's shape in partial mode: 3 ratios x 5
    forget sets (seeds) x 3 settings. Every forget set draws one random effect that all its
    settings share, for the baseline and (partly) ours, plus noise per cell; ours is 0.8 x the
    baseline in expectation, so the true reduction of the means is 20%.
    Returns baseline, ours (sims, 45) and the ratio, seed and setting of each cell (45,)."""
    rng = np.random.default_rng(seed)
    ratio, forget_set, setting = (a.ravel() for a in np.meshgrid(range(3), range(5), range(3), indexing="ij"))
    mean = np.array([6.0, 9.0, 12.0])[ratio] + np.array([0.0, 2.0, -1.0])[setting]
    shared, own = rng.normal(size=(2, sims, 15))[:, :, ratio * 5 + forget_set]
    baseline = mean + 2.0 * shared + rng.normal(0, 0.7, (sims, 45))
    ours = 0.8 * mean + 1.6 * shared + own + rng.normal(0, 0.7, (sims, 45))
    return baseline, ours, ratio, forget_set, setting


def _coverage(low, high, truth=20.0):
    return float(np.mean((low <= truth) & (truth <= high)))


def test_the_cluster_bootstrap_holds_its_coverage_on_correlated_cells():
    # 4000 simulated groups: the coverage's own standard error is 0.34 points
    baseline, ours, ratio, forget_set, _ = _correlated_cells(4000)
    _, low, high = bootstrap_reduction(baseline, ours, list(zip(ratio, forget_set)), list(ratio), draws=2000)
    assert abs(_coverage(low, high) - 0.95) <= 0.02


def test_resampling_cells_as_independent_under_covers():
    # the defect of the resampling the headline used before: cells resampled one by one within each
    # (ratio, setting), percentile interval; the settings of a forget set move together, so the
    # interval is too narrow
    baseline, ours, ratio, _, setting = _correlated_cells(4000)
    _, low, high = bootstrap_reduction(baseline, ours, strata=list(zip(ratio, setting)), draws=2000,
                                       studentized=False)
    assert _coverage(low, high) < 0.85


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    adjusted = holm([0.01, math.nan, 0.04])  # NaN is no test: m = 2
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.04]) and math.isnan(adjusted[1])
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0]) and holm([]).shape == (0,)


def test_three_verdicts_from_hand_made_intervals():
    assert reduction_verdicts(10.0, 40.0, 30.3) == {
        "better_than_baseline": "yes", "consistent_with_paper": "yes", "beyond_paper": "undecided"}
    assert reduction_verdicts(31.0, 60.0, 30.3) == {
        "better_than_baseline": "yes", "consistent_with_paper": "no", "beyond_paper": "yes"}
    assert reduction_verdicts(-5.0, 20.0, 52.9) == {
        "better_than_baseline": "undecided", "consistent_with_paper": "no", "beyond_paper": "no"}
    assert reduction_verdicts(-30.0, -2.0, 52.9)["better_than_baseline"] == "no"
    assert reduction_verdicts(30.3, 35.0, 30.3)["beyond_paper"] == "yes"
    assert set(reduction_verdicts(math.nan, math.nan, 30.3).values()) == {"undecided"}


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
    assert table.loc["a", ["cells", "clusters", "wins", "ties", "losses"]].tolist() == [3, 3, 3, 0, 0]
    assert table.loc["b", ["wins", "ties", "losses"]].tolist() == [1, 1, 1]
    # a halves every cell: 50% in every draw
    assert table.loc["a", "reduction_pct"] == pytest.approx(50.0)
    assert table.loc["a", ["reduction_low", "reduction_high"]].tolist() == pytest.approx([50.0, 50.0])
    # b: the reduction of the means, 100 x (5 - 5) / 5 = 0 (the mean of per-cell ratios is -1.11)
    assert table.loc["b", "reduction_pct"] == pytest.approx(0.0)
    assert table.loc["b", ["ours_uis", "baseline_uis"]].tolist() == pytest.approx([5.0, 5.0])
    p_a = scipy_stats.wilcoxon([4.0, 5.0, 6.0]).pvalue
    p_b = scipy_stats.wilcoxon([0.0, 1.0, -1.0], zero_method="wilcox").pvalue
    assert table.loc["a", "wilcoxon_p"] == pytest.approx(p_a)
    assert table.loc["b", "wilcoxon_p"] == pytest.approx(p_b)
    assert table["holm_p"].tolist() == pytest.approx(holm([p_a, p_b]).tolist())
    assert math.isnan(wilcoxon_p([0.0, 0.0]))


def test_the_paired_test_counts_forget_sets_not_cells():
    # two settings of each of three forget sets: the Wilcoxon test reads three cluster means
    rows = [("x", "partial", 0.1, setting, seed, model, uis) for seed, (o, b) in
            enumerate([(1.0, 3.0), (2.0, 3.0), (1.0, 4.0)]) for setting in ("p:a", "p:b")
            for model, uis in (("ours", o + (setting == "p:b")), ("base", b))]
    board = pd.DataFrame(rows, columns=["benchmark", "mode", "ratio", "setting", "seed", "model", "uis"])
    row = paired_comparisons(board, "ours", ["base"]).iloc[0]
    assert row["cells"] == 6 and row["clusters"] == 3
    assert row["wilcoxon_p"] == pytest.approx(scipy_stats.wilcoxon([1.5, 0.5, 2.5]).pvalue)
    # ours 1.5, 2.5, 1.5 against 3, 3, 4: means 11/6 and 10/3
    assert row["reduction_pct"] == pytest.approx(100 * (10 / 3 - 11 / 6) / (10 / 3))


def test_the_strongest_baseline_is_never_ours_a_variant_or_a_control_with_our_target():
    from core.evaluation.benchmark import baseline_pool, headline, target_controls
    from core.unlearning.ablations import VARIANTS
    from core.unlearning.base import list_unlearners

    assert {"gpm_calibrated", "neggrad_plus_calibrated"} <= set(target_controls())
    pool = baseline_pool(list_unlearners())
    assert {"gpm", "neggrad_plus", "scrub"} <= set(pool)
    assert not {"interference_aware", "original", "retrain", *VARIANTS, *target_controls()} & set(pool)
    # the variant and the controls score lower than gpm, yet gpm is the strongest existing baseline;
    # the strongest control is reported beside it
    uis = {"interference_aware": 4.0, "gpm": 8.0, "gpm_calibrated": 5.0, "neggrad_plus_calibrated": 6.0,
           "interference_aware_no_igo": 3.0, "retrain": 1.0}
    board = pd.DataFrame([("x", "full", 0.1, "full", seed, model, value + seed) for seed in (1, 2, 3)
                          for model, value in uis.items()],
                         columns=["benchmark", "mode", "ratio", "setting", "seed", "model", "uis2"])
    row = headline(board).iloc[0]
    assert row["strongest_baseline"] == "gpm" and row["reduction_pct"] == pytest.approx(100 * 4 / 10)
    assert row["strongest_control"] == "gpm_calibrated"
    assert row["control_reduction_pct"] == pytest.approx(100 * 1 / 7)
    # a method that ran in only some of the group's cells (the sanity tier) is never picked
    once = pd.DataFrame([("x", "full", 0.1, "full", 1, "ssd", 0.5)], columns=board.columns)
    partial = pd.concat([board, once])
    assert headline(partial).iloc[0]["strongest_baseline"] == "gpm"
