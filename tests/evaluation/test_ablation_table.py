"""The ablation table: paired UIS differences with intervals and a reading that can be undecided."""

import math

import pandas as pd
import pytest

from core.evaluation.ablations import ablation_markdown, ablation_table, reading


def _board(values):
    """values: {model: [uis per (setting, seed) cell]} over settings p:a, p:b and seeds 1, 2."""
    cells = [("p:a", 1), ("p:a", 2), ("p:b", 1), ("p:b", 2)]
    return pd.DataFrame([{"benchmark": "x", "mode": "partial", "ratio": 0.1, "setting": s, "seed": seed,
                          "model": model, "uis": uis[k]} for model, uis in values.items()
                         for k, (s, seed) in enumerate(cells)])


def test_a_part_that_helps_everywhere_reads_lower_and_a_mixed_one_undecided():
    board = _board({"interference_aware_both": [2.0, 2.0, 3.0, 3.0],
                    "interference_aware_no_tgp": [4.0, 5.0, 6.0, 7.0],  # both lower in every cell
                    "interference_aware_no_igo": [1.0, 3.0, 2.0, 4.0],  # differences +1, -1, +1, -1
                    "neggrad_plus": [5.0, 5.0, 5.0, 5.0]})
    table = ablation_table(board).set_index("part")
    assert set(table.index) == {"TGP", "IGO"}  # pairs whose methods did not run are left out
    tgp = table.loc["TGP"]
    assert tgp["difference"] == pytest.approx(-3.0) and tgp["cells"] == 4
    assert tgp["high"] < 0 and tgp["reading"] == "a lower"
    assert tgp["a_uis"] == pytest.approx(2.5) and tgp["b_uis"] == pytest.approx(5.5)
    igo = table.loc["IGO"]
    assert igo["difference"] == pytest.approx(0.0) and igo["low"] < 0 < igo["high"]
    assert igo["reading"] == "undecided"
    assert "| TGP |" in ablation_markdown(table.reset_index()[ablation_table(board).columns])


def test_reading():
    assert reading(-2.0, -0.5) == "a lower" and reading(0.5, 2.0) == "a higher"
    assert reading(-1.0, 1.0) == "undecided" and reading(math.nan, 1.0) == "undecided"
