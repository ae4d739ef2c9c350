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


def test_the_input_is_never_the_output_and_an_existing_output_is_kept(street_copy, use_cache, capsys):
    before = street_copy.with_suffix(".safetensors").read_bytes()
    args = ["unlearn", "--model", str(street_copy), "--instances", "3", "--method", "grad_ascent",
            "--set", "steps=1", "--device", "cpu"]
    assert main([*args, "--out", str(street_copy)]) == 2
    assert "is an input of this command" in capsys.readouterr().err
    assert main([*args, "--out", str(street_copy) + ".json"]) == 2
    assert street_copy.with_suffix(".safetensors").read_bytes() == before
    other = street_copy.with_name("other")
    assert main([*args, "--out", str(other)]) == 0
    first = other.with_suffix(".safetensors").read_bytes()
    assert main([*args, "--out", str(other)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert other.with_suffix(".safetensors").read_bytes() == first
    assert main([*args, "--out", str(other), "--overwrite", "--set", "seed=1"]) == 0


def test_an_unwritable_output_folder_is_refused_before_the_run(street_copy, use_cache, capsys, monkeypatch):
    from core import outputs
    from core.unlearning import runner

    monkeypatch.setattr(outputs.os, "access", lambda path, mode: False)
    monkeypatch.setattr(runner, "get_unlearner", lambda *a: pytest.fail("the run started"))
    assert main(["unlearn", "--model", str(street_copy), "--instances", "3", "--out",
                 str(street_copy.parent / "sub" / "x")]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_info_checks_the_weights_and_reads_an_unlearned_card(street_copy, use_cache, capsys):
    out = street_copy.with_name("forgot")
    assert main(["unlearn", "--model", str(street_copy), "--instances", "3", "--method", "grad_ascent",
                 "--set", "steps=1", "--device", "cpu", "--out", str(out), "--reason", "TICKET-5"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0  # its metrics are before/after rows
    shown = capsys.readouterr().out
    assert "before_after" in shown
    assert f"unlearned from {street_copy.with_suffix('.safetensors')}: grad_ascent, full-task, forget 1 " \
           "instances (3) on segmentation, depth; reason: TICKET-5" in shown
    weights = out.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:100])
    assert main(["info", str(out)]) == 2
    assert "does not match its card" in capsys.readouterr().err
    weights.unlink()
    assert main(["info", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grad_ascent", "interference_aware"])
def test_a_diverging_run_saves_nothing_and_names_the_knob(street_copy, use_cache, capsys, method):
    before = street_copy.with_suffix(".safetensors").read_bytes()
    out = street_copy.with_name("diverged")
    code = main(["unlearn", "--model", str(street_copy), "--instances", "3,5", "--method", method,
                 "--set", "lr=10", "--set", "steps=40", "--set", "optimizer=sgd", "--device", "cpu",
                 "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert f"{method} diverged at step" in err and "lower lr (now 10)" in err
    assert not out.with_suffix(".json").exists() and not out.with_suffix(".safetensors").exists()
    assert street_copy.with_suffix(".safetensors").read_bytes() == before


def test_set_device_is_not_ignored(street_copy, use_cache, capsys):
    assert main(["unlearn", "--model", str(street_copy), "--instances", "3", "--set", "device=tpu"]) == 2
    assert "device='tpu' is not accepted" in capsys.readouterr().err


def test_bench_tune_only_gives_the_variants_studies_when_asked(tmp_path, monkeypatch, capsys):
    import pandas as pd

    from core.evaluation import benchmark
    from core.evaluation.tuning import TUNING_COLUMNS

    plans = []

    def tune_plan(plan, out, workers=1, **options):
        plans.append(plan)
        return pd.DataFrame(columns=TUNING_COLUMNS)

    monkeypatch.setattr(benchmark, "tune_plan", tune_plan)
    methods = "interference_aware,interference_aware_loss_stop"
    assert main(["bench", "--tune-only", "--methods", methods, "--out", str(tmp_path / "b")]) == 0
    # a named variant without a study is said, with how to give it one
    said = capsys.readouterr().out
    assert "interference_aware_loss_stop runs at interference_aware's choice" in said
    assert "--tune-variants" in said
    assert main(["bench", "--tune-only", "--methods", methods, "--tune-variants",
                 "--out", str(tmp_path / "b2")]) == 0
    assert "runs at" not in capsys.readouterr().out
    assert [p.tuned_methods() for p in plans] == [
        ["interference_aware"], ["interference_aware", "interference_aware_loss_stop"]]


def test_bench_fresh_never_deletes_a_folder_it_did_not_write(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep")
    assert main(["bench", "--quick", "--fresh", "--out", str(folder)]) == 2
    assert "not a results folder of mtu bench" in capsys.readouterr().err
    assert (folder / "precious.txt").read_text() == "keep"


@pytest.mark.slow
def test_mtu_app_starts_the_dashboard_and_its_worker_and_stops_both(tmp_path):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = subprocess.Popen([sys.executable, "-m", "core.cli", "app", "--port", str(port)],
                           env={**os.environ, "MTU_HOME": str(tmp_path)}, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)

    def children() -> list[int]:
        found = []
        for status in Path("/proc").glob("[0-9]*/status"):
            try:
                if f"PPid:\t{app.pid}\n" in status.read_text():
                    found.append(int(status.parent.name))
            except OSError:
                continue
        return found

    try:
        for _ in range(120):
            try:
                health = f"http://127.0.0.1:{port}/_stcore/health"
                if urllib.request.urlopen(health, timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the dashboard did not answer within 60 s")
        started = children()
        assert len(started) == 2  # Streamlit and the worker
    finally:
        app.send_signal(signal.SIGTERM)
        app.wait(timeout=60)
    time.sleep(1)
    assert not [pid for pid in started if Path(f"/proc/{pid}").exists()
                and "zombie" not in Path(f"/proc/{pid}/status").read_text()]
