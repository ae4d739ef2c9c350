"""The ablation table: paired UIS v2 differences with intervals over forget sets and a reading
that can be undecided."""

import math

import pandas as pd
import pytest

from core.evaluation.ablations import ablation_markdown, ablation_table, reading

CELLS = [(setting, seed) for setting in ("p:a", "p:b") for seed in (1, 2, 3, 4, 5)]


def _board(values, score="uis2"):
    """values: {model: [score per cell of `CELLS`]}: settings p:a, p:b x seeds 1-5 (5 forget sets)."""
    return pd.DataFrame([{"benchmark": "x", "mode": "partial", "ratio": 0.1, "setting": s, "seed": seed,
                          "model": model, score: uis[k]} for model, uis in values.items()
                         for k, (s, seed) in enumerate(CELLS)])


def test_a_part_that_helps_everywhere_reads_lower_and_a_mixed_one_undecided():
    board = _board({"interference_aware": [2.0, 2.0, 3.0, 3.0, 2.5, 3.0, 2.0, 2.5, 3.5, 3.0],
                    # ours lower in every cell, by 2 to 4
                    "interference_aware_no_tgp": [4.0, 5.0, 6.0, 7.0, 5.5, 6.0, 5.0, 5.5, 6.5, 7.0],
                    # differences of +1, -1, +0.5, -0.5, 0 per forget set: they cancel
                    "interference_aware_no_igo": [1.0, 3.0, 2.5, 3.5, 2.5, 2.0, 3.0, 2.0, 4.0, 3.0],
                    "neggrad_plus": [5.0] * 10})
    table = ablation_table(board).set_index("part")
    assert set(table.index) == {"TGP", "IGO"}  # pairs whose methods did not run are left out
    tgp = table.loc["TGP"]
    assert tgp["difference"] == pytest.approx(-3.1) and tgp["cells"] == 10
    assert tgp["high"] < 0 and tgp["reading"] == "a lower"
    assert tgp["a_uis"] == pytest.approx(2.65) and tgp["b_uis"] == pytest.approx(5.75)
    igo = table.loc["IGO"]
    assert igo["difference"] == pytest.approx(0.0) and igo["low"] < 0 < igo["high"]
    assert igo["reading"] == "undecided"
    assert "| TGP |" in ablation_markdown(table.reset_index()[ablation_table(board).columns])


def test_the_interval_resamples_forget_sets_not_cells():
    # every setting of a forget set moves together: a cell bootstrap would count 10 units, the
    # forget-set one counts 5, so its interval is wider than the cells' spread alone suggests
    shift = [0.0, 2.0, -1.0, 1.5, -0.5]
    ours = [3.0 + shift[k % 5] for k in range(10)]
    board = _board({"interference_aware": ours,
                    "interference_aware_no_tgp": [b + 1.0 + 0.3 * shift[k % 5] for k, b in enumerate(ours)]})
    row = ablation_table(board).set_index("part").loc["TGP"]
    from core.evaluation.stats import cluster_ratio

    differences = (board[board["model"] == "interference_aware"]["uis2"].to_numpy()
                   - board[board["model"] == "interference_aware_no_tgp"]["uis2"].to_numpy())
    cells = cluster_ratio(differences, [1.0] * 10)  # every cell its own cluster
    assert row["high"] - row["low"] > cells[2] - cells[1]


def test_the_score_column_is_a_parameter():
    board = _board({"interference_aware": [1.0] * 10, "interference_aware_no_tgp": [2.0] * 10}, "uis")
    assert ablation_table(board, metric="uis").set_index("part").loc["TGP", "difference"] == -1.0


def test_reading():
    assert reading(-2.0, -0.5) == "a lower" and reading(0.5, 2.0) == "a higher"
    assert reading(-1.0, 1.0) == "undecided" and reading(math.nan, 1.0) == "undecided"


def test_twin_gaps_measure_tuning_luck():
    from core.evaluation.ablations import twin_gaps

    # in full mode there are no kept pairs, so IGO against them changes nothing; v1's placement
    # is, in partial mode, ours less IGO
    tuning = pd.DataFrame([("x", "full", "interference_aware", 3.0),
                           ("x", "full", "interference_aware_retain_igo", 2.0),
                           ("x", "partial", "interference_aware_by_mode", 1.0),
                           ("x", "partial", "interference_aware_no_igo", 1.5),
                           # not a twin in partial mode
                           ("x", "partial", "interference_aware_retain_igo", 9.0)],
                          columns=["benchmark", "mode", "method", "best_uis"])
    gaps = twin_gaps(tuning).set_index("mode")
    assert len(gaps) == 2
    assert gaps.loc["full", ["gap", "gap_pct"]].tolist() == pytest.approx([1.0, 50.0])
    assert gaps.loc["partial", "b"] == "interference_aware_no_igo" and gaps.loc["partial", "gap"] == 0.5


def test_every_variant_is_read_against_ours():
    from core.evaluation.ablations import CONTRASTS
    from core.unlearning.ablations import VARIANTS

    assert {(a, b) for _, a, b in CONTRASTS} >= {("interference_aware", v) for v in VARIANTS}
