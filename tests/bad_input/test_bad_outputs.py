"""The output policy of every command that writes (`core.outputs`): an input is never an output,
an existing output needs --overwrite, a name that is not a regular file is refused, a tuned-
settings file never goes into a model card, and `bench --fresh` deletes only what the bench wrote.
Each refusal comes before any work and leaves every file byte-identical."""

import json

import pytest
import torch
from bad_input_helpers import checkpoint_digest, digest
from safetensors.torch import save_file

from core.cli import main
from core.models import build_model

SMALL = {"name": "small_cnn", "args": {"width": 4}}


@pytest.fixture()
def no_work(monkeypatch):
    """Any training, tuning, import or unlearning that starts fails the test."""
    from core import importing, training
    from core.evaluation import tuning
    from core.unlearning import runner

    def fail(*args, **kwargs):
        pytest.fail("the work started before the output was checked")

    monkeypatch.setattr(training, "train", fail)
    monkeypatch.setattr(tuning, "_in_processes", fail)
    monkeypatch.setattr(importing, "fit_state_dict", fail)
    monkeypatch.setattr(runner, "get_unlearner", fail)


@pytest.fixture()
def state_dict(indoor_source, use_cache, tmp_path):
    """(X.safetensors of a small_cnn for the tiny indoor data, the data folder)."""
    torch.manual_seed(1)
    model = build_model(SMALL, list(indoor_source.open("train").tasks.values()))
    path = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path, indoor_source.resolve()


def _import(path, root, out, *extra):
    return main(["import", str(path), "--arch", "small_cnn", "--arg", "width=4", "--data", str(root),
                 "--out", str(out), *extra])


def test_import_refuses_an_existing_output(state_dict, street_copy, refused, capsys):
    path, root = state_dict
    before = checkpoint_digest(street_copy)
    refused("import", _import(path, root, street_copy), "already exists", "--overwrite")
    assert checkpoint_digest(street_copy) == before
    assert _import(path, root, street_copy, "--overwrite") == 0
    capsys.readouterr()
    assert checkpoint_digest(street_copy) != before


def test_import_never_rewrites_its_input(state_dict, refused, no_work):
    path, root = state_dict
    before = digest(path)
    refused("import", _import(path, root, path.with_suffix("")), "input", str(path))
    refused("import", _import(path, root, path.with_suffix(""), "--overwrite"), "input")
    assert digest(path) == before


def test_train_refuses_an_existing_output_before_training(street_copy, use_cache, refused, no_work):
    before = checkpoint_digest(street_copy)
    args = ["train", "--benchmark", "synthetic-street", "--n-train", "12", "--n-val", "10", "--size",
            "32x32", "--epochs", "1", "--out", str(street_copy)]
    refused("train", main(args), "already exists", "--overwrite")
    assert checkpoint_digest(street_copy) == before


def test_train_never_writes_over_its_backbone_weights(tmp_path, use_cache, refused, no_work):
    backbone = tmp_path / "backbone.safetensors"
    save_file({"w": torch.zeros(2)}, str(backbone))
    before = digest(backbone)
    args = ["train", "--benchmark", "synthetic-street", "--backbone-weights", str(backbone),
            "--out", str(tmp_path / "backbone"), "--overwrite"]
    refused("train", main(args), "input", str(backbone))
    assert digest(backbone) == before


def test_an_output_name_that_is_a_folder_is_refused_even_with_overwrite(street_copy, use_cache, refused,
                                                                        no_work):
    out = street_copy.with_name("taken")
    out.with_suffix(".json").mkdir()
    args = ["unlearn", "--model", str(street_copy), "--instances", "3", "--out", str(out), "--overwrite"]
    refused("unlearn", main(args), "taken.json", "not a regular file")
    assert out.with_suffix(".json").is_dir()


def test_tune_never_writes_into_the_models_own_card(street_copy, use_cache, refused, no_work):
    before = checkpoint_digest(street_copy)
    card = street_copy.with_suffix(".json")
    refused("tune", main(["tune", "--model", str(street_copy), "--out", str(card)]), str(card), "input")
    assert checkpoint_digest(street_copy) == before


def test_tune_from_bench_never_writes_into_a_model_card(street_copy, tmp_path, refused):
    folder = tmp_path / "bench"
    (folder / "tuning").mkdir(parents=True)
    (folder / "plan.json").write_text(json.dumps({"fingerprint": {}, "plan": {"ratios": [0.01]}}))
    (folder / "tuning" / "a.json").write_text(json.dumps({
        "benchmark": "synthetic-street", "ratio": 0.01, "setting": "full", "method": "ssd",
        "chosen": {"lr": 1.0}, "best_uis": 1.0}))
    before = checkpoint_digest(street_copy)
    card = street_copy.with_suffix(".json")
    refused("tune", main(["tune", "--from-bench", str(folder), "--out", str(card)]), str(card),
            "model card", "tuned.json")
    # a card without its weights beside it is still a card
    alone = tmp_path / "alone.json"
    alone.write_bytes(card.read_bytes())
    refused("tune", main(["tune", "--from-bench", str(folder), "--out", str(alone)]), "model card")
    # any other JSON that is not a tuned-settings file
    other = tmp_path / "other.json"
    other.write_text("[1, 2, 3]")
    refused("tune", main(["tune", "--from-bench", str(folder), "--out", str(other)]), str(other),
            "not a tuned-settings file")
    assert checkpoint_digest(street_copy) == before
    assert alone.read_bytes() == card.read_bytes() and other.read_text() == "[1, 2, 3]"


def test_bench_fresh_refuses_a_plan_json_it_did_not_write(tmp_path, refused):
    folder = tmp_path / "mine"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "a.jpg").write_bytes(b"\xff\xd8")
    (folder / "plan.json").write_text('{"trip": "Rome"}')
    (folder / "notes.txt").write_text("keep")
    before = digest(folder)
    refused("bench", main(["bench", "--quick", "--fresh", "--out", str(folder)]), str(folder),
            "not a results folder of mtu bench")
    assert digest(folder) == before


def test_bench_fresh_deletes_only_what_the_bench_wrote(tmp_path):
    from core.evaluation.benchmark import QUICK, Bench, clear_results

    folder = tmp_path / "bench"
    Bench(QUICK, folder, log=lambda _: None)  # writes plan.json
    for name in ("cells/x.json", "tuning/y.json", "models/synthetic-indoor.json", "summary.md",
                 "leaderboard.csv", "report.html", "noise_floor.json"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("{}")
    (folder / "notes.txt").write_text("mine")
    (folder / "cells" / "my-analysis.ipynb").write_text("mine too")
    (folder / "drafts").mkdir()
    (folder / "drafts" / "d.md").write_text("mine")
    kept = clear_results(folder)
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert left == ["cells/my-analysis.ipynb", "drafts/d.md", "notes.txt"]
    assert sorted(str(p.relative_to(folder)) for p in kept) == ["cells/my-analysis.ipynb", "drafts",
                                                                  "notes.txt"]
