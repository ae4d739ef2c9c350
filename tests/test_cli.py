import pytest

from core.checkpoints import load_checkpoint, read_card
from core.cli import build_parser, main


def test_train_info_and_unlearn_round_trip(tmp_path, use_cache, capsys):
    out = tmp_path / "tiny"
    code = main(["train", "--benchmark", "synthetic-street", "--n-train", "12", "--n-val", "10",
                 "--size", "32x32", "--arg", "width=4", "--epochs", "1", "--batch-size", "4",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    assert "val" in capsys.readouterr().out
    assert main(["info", str(out)]) == 0
    assert "synthetic-street" in capsys.readouterr().out

    card = read_card(out)
    ids = ",".join(str(i) for i in card.train_ids[:2])
    unlearned = tmp_path / "forgot"
    code = main(["unlearn", "--model", str(out), "--instances", ids, "--tasks", "depth",
                 "--method", "grad_ascent", "--set", "steps=2", "--device", "cpu",
                 "--out", str(unlearned)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "partial-task" in printed and "forget" in printed and "test" in printed
    _, child = load_checkpoint(unlearned)
    assert child.parent.endswith("tiny.safetensors")
    assert child.request["instances"] == card.train_ids[:2]
    assert child.request["method"] == "grad_ascent" and child.request["config"]["steps"] == 2


def test_bad_input_is_a_message_not_a_traceback(tmp_path, use_cache, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--benchmark", "x", "--size", "big", "--out", "o"])


@pytest.mark.parametrize("args, message", [(["--ratios", "2"], "ratio 2.0 is not in"),
                                           (["--methods", "nope"], "unknown method 'nope'"),
                                           (["--seeds", "0"], "tuning seed 0")])
def test_bench_rejects_a_bad_plan(args, message, capsys, tmp_path):
    assert main(["bench", "--out", str(tmp_path / "b"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_the_five_task_context_benchmark_trains_and_unlearns(tmp_path, use_cache, capsys):
    out = tmp_path / "context"
    assert main(["train", "--benchmark", "synthetic-context", "--n-train", "12", "--n-val", "10",
                 "--size", "32x32", "--arg", "width=4", "--epochs", "1", "--batch-size", "4",
                 "--device", "cpu", "--out", str(out)]) == 0
    card = read_card(out)
    kinds = {t["kind"] for t in card.tasks}
    assert {"segmentation", "parts", "saliency", "edges", "normal"} <= kinds and len(card.tasks) == 5
    saliency = next(t["name"] for t in card.tasks if t["kind"] == "saliency")
    ids = ",".join(str(i) for i in card.train_ids[:2])
    assert main(["unlearn", "--model", str(out), "--instances", ids, "--tasks", saliency,
                 "--method", "interference_aware", "--set", "steps=2", "--device", "cpu",
                 "--out", str(tmp_path / "forgot")]) == 0
    assert "partial-task" in capsys.readouterr().out
