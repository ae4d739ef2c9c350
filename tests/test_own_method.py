"""The path of examples/own_method end to end: an unlearning method in the user's own module,
registered as a plugin (`--plugin my_methods` or the `mtunlearn.methods` entry point), listed and
run by the CLI, refused clearly when it clashes or breaks, benchmarked by `mtu bench --quick` in
spawned workers, and run by the dashboard's worker, which imports the method's plugin."""

import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from core import plugins
from core.checkpoints import load_checkpoint, read_card
from core.cli import main
from core.ledger import Ledger
from core.requests import ForgetRequest
from core.unlearning import list_unlearners
from core.unlearning.base import REGISTRY, unregister
from core.unlearning.search import search_space

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_method"


@pytest.fixture()
def on_path(monkeypatch):
    """The example's folder on sys.path (as PYTHONPATH=examples/own_method does), its method not
    registered yet; afterwards the method and the module are gone again, so no other test sees
    them."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    assert "fisher_forget" not in REGISTRY
    yield EXAMPLE
    unregister("fisher_forget")
    sys.modules.pop("my_methods", None)


def test_the_method_is_unknown_without_its_plugin(on_path, street_copy, use_cache, capsys):
    code = main(["unlearn", "--model", str(street_copy), "--instances", "3", "--method", "fisher_forget"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown unlearning method 'fisher_forget'" in err
    assert "--plugin MODULE" in err and "mtunlearn.methods" in err  # how to bring one's own


def test_the_cli_lists_the_plugin_method(on_path, capsys):
    assert main(["info", "--plugin", "my_methods", "--methods"]) == 0
    out = capsys.readouterr().out
    assert "fisher_forget" in out and "(plugin my_methods)" in out and "grad_ascent" in out
    assert REGISTRY["fisher_forget"].plugin == "my_methods" and REGISTRY["grad_ascent"].plugin is None
    assert set(search_space("fisher_forget", "partial")) == {"lr", "steps", "alpha"}


@pytest.mark.parametrize("tasks", [["--tasks", "depth"], []], ids=["partial", "full"])
def test_cli_unlearns_with_the_plugin_method(on_path, street_copy, use_cache, tmp_path, tasks, capsys):
    out = tmp_path / "forgot"
    code = main(["unlearn", "--plugin", "my_methods", "--model", str(street_copy), "--instances", "3,5",
                 *tasks, "--method", "fisher_forget", "--set", "steps=2", "--set", "alpha=0.3",
                 "--set", "retain_batch=8", "--set", "fisher_batches=1", "--device", "cpu",
                 "--out", str(out), "--reason", "own method"])
    assert code == 0, capsys.readouterr().err
    assert "fisher_forget" in capsys.readouterr().out
    card = read_card(out)
    assert card.request["method"] == "fisher_forget" and card.request["config"]["alpha"] == 0.3
    after, _ = load_checkpoint(out)
    before, _ = load_checkpoint(street_copy)
    assert any(not torch.equal(a, b) for a, b in zip(after.state_dict().values(),
                                                     before.state_dict().values()))
    (row,) = Ledger().runs()
    assert row["method"] == "fisher_forget" and row["status"] == "done"


def test_a_name_clash_with_a_builtin_method_is_refused_naming_both(tmp_path, monkeypatch, capsys):
    (tmp_path / "clash_plugin.py").write_text(
        "from core.unlearning import register\n"
        "from core.unlearning.grad_ascent import GradAscent\n\n\n"
        "@register\nclass MyAscent(GradAscent):\n    name = 'grad_ascent'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["info", "--methods", "--plugin", "clash_plugin"]) == 2
    finally:
        sys.modules.pop("clash_plugin", None)
    err = capsys.readouterr().err
    assert "'grad_ascent'" in err and "core.unlearning.grad_ascent.GradAscent" in err
    assert "clash_plugin.MyAscent" in err and len(err.strip().splitlines()) == 1
    assert REGISTRY["grad_ascent"].__module__ == "core.unlearning.grad_ascent"


def test_a_method_class_without_a_config_dataclass_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad_config_plugin.py").write_text(
        "from core.unlearning import register\n"
        "from core.unlearning.grad_ascent import GradAscent\n\n\n"
        "@register\nclass Odd(GradAscent):\n    name = 'odd'\n    config_class = dict\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["info", "--methods", "--plugin", "bad_config_plugin"]) == 2
    finally:
        sys.modules.pop("bad_config_plugin", None)
    err = capsys.readouterr().err
    assert "bad_config_plugin" in err and "UnlearnConfig" in err and "odd" not in list_unlearners()


def _method_entry_points(monkeypatch, load):
    point = SimpleNamespace(name="theirs", value="their_pkg.methods", module="their_pkg", load=load)
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [point] if group == plugins.METHODS else [])
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.setattr(plugins, "_errors", {})


def test_an_entry_point_registers_the_method_lazily(on_path, monkeypatch):
    import importlib

    _method_entry_points(monkeypatch, lambda: importlib.import_module("my_methods"))
    assert "my_methods" not in sys.modules
    assert "fisher_forget" in list_unlearners()  # loaded by the first look at the methods


def test_a_broken_method_entry_point_is_named(monkeypatch, capsys):
    def broken():
        raise RuntimeError("needs a GPU\nsecond line")

    _method_entry_points(monkeypatch, broken)
    assert main(["info", "--methods"]) == 2
    err = capsys.readouterr().err
    for fragment in ("theirs", "their_pkg.methods", "mtunlearn.methods", "RuntimeError", "needs a GPU"):
        assert fragment in err, err
    assert "second line" not in err


MINI_QUICK = dict(benchmarks=("synthetic-indoor",), ratios=(0.1,), seeds=(1,), trials=1, n_train=12,
                  n_val=10, size=(32, 32), epochs=1, width=4, retain_sample=8)


@pytest.mark.slow
def test_bench_quick_runs_the_plugin_method_in_spawned_workers(on_path, tmp_path, use_cache, monkeypatch,
                                                               capsys):
    """`mtu bench --quick --plugin my_methods --methods fisher_forget,grad_ascent --workers 2`: the
    tuning studies and the cells run in spawned processes, which import the method's plugin. The
    quick plan is made smaller still, so that the test takes seconds, not minutes."""
    from core.evaluation import benchmark

    monkeypatch.setattr(benchmark, "QUICK", benchmark.plan_with(benchmark.QUICK, **MINI_QUICK))
    out = tmp_path / "bench"
    code = main(["bench", "--quick", "--plugin", "my_methods", "--methods", "fisher_forget,grad_ascent",
                 "--workers", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    board = pd.read_csv(out / "leaderboard.csv")
    assert {"fisher_forget", "grad_ascent", "retrain", "original"} <= set(board["model"])
    assert board[board["model"] == "fisher_forget"]["uis2"].notna().all()
    assert {p.stem.split("__")[-1] for p in (out / "tuning").glob("*.json")} >= {"fisher_forget"}
    assert "fisher_forget" in (out / "report.html").read_text()


def _submit(path, monkeypatch, method="fisher_forget"):
    """Submit a 1-step run of `method` on the model at `path` as the dashboard does, the job
    handed at once to `jobs.execute` (the worker's entry point)."""
    from core import jobs

    monkeypatch.setattr(jobs, "queue", lambda home=None: (None, jobs.execute))
    model, card = load_checkpoint(path)
    request = ForgetRequest.build([3, 5], None, card.train_ids, list(model.tasks))
    (run_id,) = jobs.submit(Ledger(), path, card, request, method,
                            {"steps": 1, "device": "cpu", "retain_batch": 4, "fisher_batches": 1})
    (row,) = Ledger().runs(run_id=run_id)
    return row


def test_the_worker_imports_the_methods_plugin(on_path, street_copy, use_cache, monkeypatch):
    """The job records the plugin its method comes from; its own process (as in `mtu worker`)
    imports it, as `mtu app --plugin my_methods` allowed."""
    main(["info", "--plugin", "my_methods", "--methods"])  # the dashboard lists it: it is imported
    monkeypatch.setenv("MTU_APP_PLUGINS", "my_methods")
    monkeypatch.delenv("MTU_QUEUE")  # a spawned process, where my_methods is not imported yet
    row = _submit(street_copy, monkeypatch)
    assert row["status"] == "done", row["error"]
    assert row["method"] == "fisher_forget" and row["result_path"]


def test_a_method_plugin_the_worker_may_not_import_is_named(on_path, street_copy, use_cache, monkeypatch):
    main(["info", "--plugin", "my_methods", "--methods"])
    monkeypatch.setenv("MTU_APP_PLUGINS", "")
    row = _submit(street_copy, monkeypatch)
    assert row["status"] == "failed"
    assert "plugin module 'my_methods'" in row["error"] and "mtu app --plugin my_methods" in row["error"]
