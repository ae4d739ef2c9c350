import pandas as pd

from core.evaluation.geometry import COLUMNS, method_outlook
from core.unlearning.interference_aware import InterferenceAwareConfig


def _frame(cos=0.45, saturation=(1.0, 0.5, 0.25), forget_kept=0.6):
    rows = [{"measure": "cross_task_cos", "layer": f"l{i}", "task": "a", "other": "b", "value": cos}
            for i in range(3)]
    rows += [{"measure": "forget_kept_cos", "layer": f"l{i}", "task": "a", "other": "b",
              "value": -forget_kept} for i in range(3)]
    for target in ("a", "b"):
        rows += [{"measure": "output_saturation", "layer": f"l{i}", "task": target, "other": "",
                  "value": value, "rank": value * 8, "channels": 8} for i, value in enumerate(saturation)]
    return pd.DataFrame(rows, columns=COLUMNS)


def test_partial_request_with_room_names_the_layers_and_the_kept_pairs():
    config = InterferenceAwareConfig(tgp="always", igo="always", igo_kept=True, saturation=0.9)
    text = " ".join(method_outlook(_frame(), config, "partial", ["a"]))
    assert "task conflict" in text.lower() and "0.45" in text
    assert "2 of 3 shared layers" in text  # 0.5 and 0.25 leave room; 1.0 is saturated
    assert "GPM's input-side projection in 1" in text
    assert "kept tasks' gradients on the forget images" in text and "0.60" in text


def test_low_conflict_and_parts_that_do_not_run():
    config = InterferenceAwareConfig(tgp="partial", igo="full")  # v1's placement: each part in one mode
    lines = method_outlook(_frame(cos=0.1), config, "full", [])
    text = " ".join(lines)
    assert "low task conflict" in text.lower()
    assert "TGP does not run in full-task requests" in text
    assert "IGO runs" in text
    partial = " ".join(method_outlook(_frame(cos=0.1), config, "partial", ["b"]))
    assert "IGO does not run in partial-task requests" in partial


def test_full_request_with_a_kept_only_basis_is_gpm_everywhere():
    config = InterferenceAwareConfig(tgp="always", output_basis="kept")
    text = " ".join(method_outlook(_frame(), config, "full", []))
    assert "no kept task" in text and "every shared layer" in text


def test_without_measures_it_says_so():
    empty = pd.DataFrame(columns=COLUMNS)
    text = " ".join(method_outlook(empty, InterferenceAwareConfig(), "partial", ["a"]))
    assert "not measured" in text
