"""The path of examples/own_model end to end: a user's model in its own file, trained with plain
PyTorch and saved with torch.save, registered as a plugin, imported, unlearned from the CLI (full
and partial), run through every method, and opened by the dashboard."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.checkpoints import load_checkpoint, read_card
from core.cli import main
from core.data import generate
from core.models import get_architecture, load_plugins
from core.models.registry import unregister_architecture
from core.requests import ForgetRequest
from core.unlearning import UnlearningData, get_unlearner, list_unlearners

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_model"


@pytest.fixture(scope="module")
def plugin_path():
    sys.path.insert(0, str(EXAMPLE))
    load_plugins(["my_models"])
    yield EXAMPLE
    sys.path.remove(str(EXAMPLE))


@pytest.fixture(scope="module")
def imported(tmp_path_factory, plugin_path):
    """(data root, imported checkpoint path): the example's own script trains and saves."""
    root = tmp_path_factory.mktemp("own")
    data = generate("synthetic-indoor", root / "data", seed=0, n_train=16, n_val=12, size=(32, 32))
    subprocess.run([sys.executable, str(EXAMPLE / "train_elsewhere.py"), str(data),
                    str(root / "plain.pt"), "--epochs", "2"], check=True, capture_output=True,
                   env={"PYTHONPATH": f"{EXAMPLE}:{Path(__file__).resolve().parents[1]}",
                        "OMP_NUM_THREADS": "2"})
    code = main(["import", str(root / "plain.pt"), "--plugin", "my_models", "--arch", "two_scale_net",
                 "--arg", "width=8", "--data", str(data), "--rename", "decoders.=heads.",
                 "--out", str(root / "imported")])
    assert code == 0
    return data, root / "imported"


def test_the_plugin_is_recorded_and_the_import_evaluated(imported, capsys):
    _, path = imported
    card = read_card(path)
    assert card.architecture == {"name": "two_scale_net", "args": {"width": 8}, "plugin": "my_models"}
    assert get_architecture("two_scale_net").plugin == "my_models"
    assert set(card.metrics) == {"train", "val"}
    assert set(card.metrics["val"]) == {"segmentation", "depth", "normal"}
    assert len(card.train_ids) == 16 and "data" in card.training
    model, _ = load_checkpoint(path)
    state = torch.load(path.parent / "plain.pt", weights_only=True)
    assert torch.equal(model.heads["depth"].out.weight, state["decoders.depth.out.weight"])


def test_cli_unlearns_full_and_partial(imported, tmp_path, capsys):
    _, path = imported
    for tasks, mode in ((["--tasks", "depth"], "partial-task"), ([], "full-task")):
        code = main(["unlearn", "--plugin", "my_models", "--model", str(path), "--instances", "3,5",
                     *tasks, "--method", "interference_aware", "--set", "steps=2", "--device", "cpu",
                     "--out", str(tmp_path / mode)])
        assert code == 0
        assert mode in capsys.readouterr().out
        child = read_card(tmp_path / mode)
        assert child.architecture["plugin"] == "my_models" and child.request["instances"] == [3, 5]


def test_a_card_needing_a_missing_plugin_names_the_module(imported, capsys):
    _, path = imported
    unregister_architecture("two_scale_net")
    try:
        assert main(["info", str(path)]) == 0  # reading the card needs no plugin
        assert main(["unlearn", "--model", str(path), "--instances", "3"]) == 2
        err = capsys.readouterr().err
        assert "plugin module 'my_models', which is not loaded" in err and "--plugin my_models" in err
    finally:
        import importlib

        import my_models
        importlib.reload(my_models)


@pytest.mark.parametrize("method", list_unlearners())
def test_every_method_runs_on_the_wrapped_model(imported, method):
    data_root, path = imported
    model, card = load_checkpoint(path)
    data = UnlearningData.from_card(card)
    request = ForgetRequest.build([3, 5], ["depth"], data.train_ids, list(model.tasks))
    config = {"steps": 2, "device": "cpu", "retain_batch": 4}
    if method == "retrain":
        config = {"epochs": 1, "device": "cpu"}
    result = get_unlearner(method, config).run(model, request, data)
    assert set(result.model(torch.rand(1, 3, 32, 32))) == {"segmentation", "depth", "normal"}
    assert all(torch.isfinite(p).all() for p in result.model.parameters())


def _queued(path, monkeypatch, plugins):
    """Submit a 1-step run of the imported model as the dashboard does, the job handed at once to
    `jobs.execute` (the worker's entry point)."""
    from core import jobs
    from core.ledger import Ledger

    monkeypatch.setattr(jobs, "queue", lambda home=None: (None, jobs.execute))
    model, card = load_checkpoint(path)
    request = ForgetRequest.build([3, 5], None, card.train_ids, list(model.tasks))
    (run_id,) = jobs.submit(Ledger(), path, card, request, "grad_ascent", {"steps": 1, "device": "cpu"},
                            plugins=plugins)
    (row,) = Ledger().runs(run_id=run_id)
    return row


def test_the_worker_imports_the_plugin_the_model_needs(imported, monkeypatch):
    """Issue 19, defect 2: a run of an own model failed in the worker ("plugin module 'my_models'
    ... is not loaded") when the job did not name the plugin. The job runs in a process of its
    own (as in `mtu worker`), which imports the plugin its card records."""
    _, path = imported
    monkeypatch.setenv("MTU_APP_PLUGINS", "my_models")  # as `mtu app --plugin my_models` allows it
    monkeypatch.delenv("MTU_QUEUE")  # a spawned process, where my_models is not imported yet
    row = _queued(path, monkeypatch, plugins=[])
    assert row["status"] == "done", row["error"]


def test_a_plugin_the_worker_may_not_import_is_named_in_the_runs_error(imported, monkeypatch):
    _, path = imported
    monkeypatch.setenv("MTU_APP_PLUGINS", "")
    row = _queued(path, monkeypatch, plugins=[])
    assert row["status"] == "failed"
    assert "plugin module 'my_models'" in row["error"] and "mtu app --plugin my_models" in row["error"]
