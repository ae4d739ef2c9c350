"""The verdict sentence (issue 19): hand-made Comparison frames in, one plain sentence out."""

import math

import pandas as pd

from core.evaluation.verdict import id_ranges, relative_change, verdict

NAN = math.nan


def _scores(values: dict[str, dict[str, dict[str, float]]]) -> pd.DataFrame:
    """{model: {split: {task: value}}} as a scores frame; "score" is each task's primary metric,
    "other" a second metric the sentence must not read."""
    rows = [{"model": m, "split": s, "task": t, "metric": metric, "value": v if metric == "score" else 0.0,
             "primary": metric == "score"}
            for m, splits in values.items() for s, tasks in splits.items() for t, v in tasks.items()
            for metric in ("score", "other")]
    return pd.DataFrame(rows)


def _board(**columns) -> pd.DataFrame:
    models = ["original", "grad_ascent", "retrain"]
    return pd.DataFrame({"model": models, **{k: v for k, v in columns.items()}})


FULL = {"original": {"forget": {"seg": 0.80, "depth": 0.90}, "retain": {"seg": 0.80, "depth": 0.90},
                     "test": {"seg": 0.60, "depth": 0.70}},
        "grad_ascent": {"forget": {"seg": 0.60, "depth": 0.72}, "retain": {"seg": 0.76, "depth": 0.90},
                        "test": {"seg": 0.60, "depth": 0.63}},
        "retrain": {"forget": {"seg": 0.62, "depth": 0.70}, "retain": {"seg": 0.79, "depth": 0.89},
                    "test": {"seg": 0.60, "depth": 0.70}}}


def test_full_mode_with_an_oracle_says_everything():
    board = _board(mia_auc=[0.61, 0.52, 0.49], oracle_gap=[4.5, 1.3, 0.0])
    sentence = verdict(board, _scores(FULL), "grad_ascent", [40, 3, 17, 41, 42], ["seg", "depth"])
    assert sentence == (
        "grad_ascent forgot 5 training instances (ids 3, 17, 40-42) on every task (seg and depth): on "
        "those images seg's score went from 0.800 to 0.600 (retrain oracle: 0.620) and depth's score "
        "went from 0.900 to 0.720 (retrain oracle: 0.700); it changed the retained training images by "
        "-2.5% and the test set by -5.0% (each task's primary metric, relative to the original); a "
        "membership attack tells the forget images from unseen ones with AUC 0.52 (0.5 = "
        "indistinguishable; before unlearning 0.61; retrain oracle 0.49); and it ended closer to the "
        "retrain oracle than the original was (mean gap of the primary metrics 1.3 against 4.5 points).")
    assert "None" not in sentence and "nan" not in sentence.lower()


def test_partial_mode_without_oracle_or_attack():
    values = {m: {**splits, "kept": {"normal": 0.5 if m == "original" else 0.49}}
              for m, splits in FULL.items() if m != "retrain"}
    values = {m: {s: ({"seg": t["seg"]} if s == "forget" else t) for s, t in splits.items()}
              for m, splits in values.items()}
    board = _board(mia_auc=[NAN, NAN, NAN], oracle_gap=[NAN, NAN, NAN]).iloc[:2]
    sentence = verdict(board, _scores(values), "grad_ascent", [7], ["seg"], ["depth", "normal"])
    assert sentence.startswith("grad_ascent forgot 1 training instance (ids 7) on seg only, keeping "
                               "depth and normal: on those images seg's score went from 0.800 to 0.600;")
    assert "the kept tasks on the forget images by -2.0%" in sentence
    assert "no membership attack was run" in sentence
    assert sentence.endswith("and without a retrain oracle for this request, closeness to it is not "
                             "measured.")
    assert "None" not in sentence and "nan" not in sentence.lower()


def test_a_run_farther_from_the_oracle_and_an_approximate_oracle():
    board = _board(mia_auc=[0.61, 0.70, 0.49], oracle_gap=[4.5, 6.0, 0.0])
    sentence = verdict(board, _scores(FULL), "grad_ascent", [3], ["seg", "depth"], oracle_exact=False)
    assert "did not end closer to the approximate retrain oracle than the original was" in sentence
    assert "(approximate retrain oracle: 0.620)" in sentence and "approximate retrain oracle 0.49" in sentence


def test_ids_and_relative_change():
    assert id_ranges([5, 1, 2, 3, 9]) == "1-3, 5, 9"
    assert id_ranges(range(0, 40, 2), limit=3) == "0, 2, 4, ... (20 in all)"
    scores = _scores(FULL)
    assert math.isclose(relative_change(scores, "grad_ascent", "test"), -5.0)
    assert math.isclose(relative_change(scores, "grad_ascent", "test", tasks=["depth"]), -10.0)
    assert math.isnan(relative_change(scores, "grad_ascent", "kept"))
