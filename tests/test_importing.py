import json

import pytest
import torch
from safetensors.torch import save_file

from core.checkpoints import CheckpointError, load_checkpoint
from core.cli import main
from core.importing import ImportMismatch, import_checkpoint, parse_train_ids, rename_keys
from core.models import build_model

SMALL = {"name": "small_cnn", "args": {"width": 4}}


@pytest.fixture()
def trained_elsewhere(indoor_source, use_cache, tmp_path):
    """A state dict as DataParallel would save it (keys prefixed with "module.")."""
    torch.manual_seed(1)
    model = build_model(SMALL, list(indoor_source.open("train").tasks.values()))
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "elsewhere.pth")
    return model, tmp_path / "elsewhere.pth", indoor_source.resolve()


def test_import_round_trip_keeps_weights_and_evaluates(trained_elsewhere, tmp_path):
    model, path, root = trained_elsewhere
    (tmp_path / "ids.txt").write_text("0, 1 2\n3\n")
    _, card, weights = import_checkpoint(path, SMALL, root, tmp_path / "ids.txt",
                                         strip_prefix="module.", out=tmp_path / "imported")
    loaded, card = load_checkpoint(weights)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    assert card.train_ids == [0, 1, 2, 3]
    assert set(card.metrics) == {"train", "val"} and card.training["data"]["root"] == str(root)


def test_every_mismatch_is_listed(trained_elsewhere):
    _, path, root = trained_elsewhere
    with pytest.raises(ImportMismatch) as caught:
        import_checkpoint(path, {"name": "small_cnn", "args": {"width": 8}}, root, strip_prefix="module.")
    problems = caught.value.problems
    assert problems
    assert all(p.startswith("shape of") for p in problems)
    assert "--strip-prefix" in str(caught.value)
    with pytest.raises(ImportMismatch, match="(?s)missing encoder.stem.0.0.weight.*unexpected module."):
        import_checkpoint(path, SMALL, root)  # the prefix was not stripped


def test_bad_train_ids_are_named(tmp_path):
    (tmp_path / "ids.txt").write_text("1, x")
    with pytest.raises(CheckpointError, match=r"\['x'\], which are not instance ids"):
        parse_train_ids(tmp_path / "ids.txt", [0, 1])
    (tmp_path / "ids.txt").write_text("1, 9")
    with pytest.raises(CheckpointError, match=r"ids \[9\] that are not in the train split"):
        parse_train_ids(tmp_path / "ids.txt", [0, 1])
    with pytest.raises(CheckpointError, match="give 'all' or a file"):
        parse_train_ids("some", [0])
    assert parse_train_ids("all", [4, 5]) == [4, 5]


def test_rename_keys_replaces_the_first_matching_prefix():
    state = {"decoders.depth.w": 1, "encoder.w": 2}
    assert rename_keys(state, [("decoders.", "heads.")]) == {"heads.depth.w": 1, "encoder.w": 2}


def test_cli_import_reports_mismatches_as_a_message(trained_elsewhere, tmp_path, capsys):
    _, path, root = trained_elsewhere
    safetensors_path = tmp_path / "plain.safetensors"
    save_file({"x": torch.ones(1)}, str(safetensors_path))
    code = main(["import", str(safetensors_path), "--arch", "small_cnn", "--arg", "width=4",
                 "--data", str(root), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "unexpected x (1,)" in err and "missing encoder" in err
    assert not (tmp_path / "o.json").exists()
    code = main(["import", str(path), "--arch", "small_cnn", "--arg", "width=4", "--data", str(root),
                 "--strip-prefix", "module.", "--out", str(tmp_path / "o")])
    assert code == 0 and "imported" in capsys.readouterr().out


def test_bad_train_id_files_name_the_file(tmp_path):
    path = tmp_path / "ids.txt"
    path.write_bytes(b"1, 2\n\xff\xfe3")
    with pytest.raises(CheckpointError, match=r"cannot read .*ids\.txt: 'utf-8' codec"):
        parse_train_ids(path, [0, 1])
    for huge in ("99999999999999999999", "9" * 5000):
        path.write_text(f"1, {huge}")
        with pytest.raises(CheckpointError, match=r"ids\.txt holds \['99999999999999999999.*\], "
                                                  "which are not instance ids; expected "):
            parse_train_ids(path, [0, 1])


def test_nan_weights_are_refused_by_name(trained_elsewhere, tmp_path):
    model, _, root = trained_elsewhere
    state = model.state_dict()
    state["heads.depth.predict.weight"][0] = float("nan")
    state["encoder.stem.0.0.weight"][0] = float("inf")
    torch.save(state, tmp_path / "diverged.pth")
    named = r"\['encoder\.stem\.0\.0\.weight', 'heads\.depth\.predict\.weight'\]"
    with pytest.raises(CheckpointError, match=r"diverged\.pth holds NaN or Inf in " + named):
        import_checkpoint(tmp_path / "diverged.pth", SMALL, root, out=tmp_path / "o")
    assert not list(tmp_path.glob("o.*"))


def test_the_state_dict_is_compared_with_the_dataset_before_the_model_is_allocated(
        trained_elsewhere, tmp_path, monkeypatch):
    """A dataset whose meta.json claims many classes (65 536, the most a task may have) is
    compared with the state dict on the "meta" device: no real model is built for it."""
    import shutil

    import core.importing

    _, path, root = trained_elsewhere
    shutil.copytree(root, tmp_path / "wide")
    meta = json.loads((tmp_path / "wide" / "meta.json").read_text())
    meta["tasks"]["segmentation"].update(channels=2**16, class_names=[])
    (tmp_path / "wide" / "meta.json").write_text(json.dumps(meta))
    devices = []
    build = core.importing.build_model

    def spy(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return build(*args, **kwargs)

    monkeypatch.setattr(core.importing, "build_model", spy)
    with pytest.raises(ImportMismatch, match=r"shape of heads\.segmentation\.predict\.weight: model "
                                             r"\(65536, "):
        import_checkpoint(path, SMALL, tmp_path / "wide", strip_prefix="module.")
    assert devices == ["meta"]


def test_the_card_records_what_the_folder_holds_and_that_the_recipe_is_unknown(trained_elsewhere, tmp_path):
    """Issue 19, defect 8: an imported card recorded the generator's defaults (800 / 600, 64x64)
    for a 12 / 10, 32x32 folder, and nothing about the recipe, so the oracle silently retrained
    with the engine's 60 epochs and its time estimate said "about 0 s"."""
    from core.importing import oracle_approximation, oracle_seconds

    _, path, root = trained_elsewhere
    _, card, _ = import_checkpoint(path, SMALL, root, strip_prefix="module.", out=tmp_path / "imported")
    data = card.training["data"]
    assert (data["n_train"], data["n_val"], data["size"]) == (12, 10, [32, 32])
    assert card.training["recipe"] == "unknown" and "epochs" not in card.training
    note = oracle_approximation(card.training)
    assert note.startswith("approximate: the model's training recipe is unknown") and "60 epochs" in note
    assert oracle_seconds(card.training, 0.9) is None
    assert load_checkpoint(tmp_path / "imported")[1].training == card.training


def test_mtu_import_takes_the_training_recipe(trained_elsewhere, tmp_path, capsys):
    from types import SimpleNamespace

    from core.importing import oracle_approximation, oracle_seconds
    from core.unlearning import get_unlearner

    _, path, root = trained_elsewhere
    base = ["import", str(path), "--arch", "small_cnn", "--arg", "width=4", "--data", str(root),
            "--strip-prefix", "module."]
    assert main([*base, "--epochs", "3", "--batch-size", "4", "--lr", "0.01", "--weight-decay", "0.0001",
                 "--seed", "7", "--train-seconds", "20", "--out", str(tmp_path / "exact")]) == 0
    assert "retrain oracle: exact" in capsys.readouterr().out
    _, card = load_checkpoint(tmp_path / "exact")
    keys = ("recipe", "epochs", "batch_size", "lr", "weight_decay", "seed")
    assert {k: card.training[k] for k in keys} == {"recipe": "given", "epochs": 3, "batch_size": 4,
                                                   "lr": 0.01, "weight_decay": 0.0001, "seed": 7}
    assert oracle_approximation(card.training) is None and oracle_seconds(card.training, 0.5) == 10.0
    ctx = SimpleNamespace(data=SimpleNamespace(training=card.training), device=torch.device("cpu"))
    recipe = get_unlearner("retrain").recipe(ctx)  # the oracle retrains with the model's own recipe
    assert (recipe.epochs, recipe.batch_size, recipe.lr, recipe.seed) == (3, 4, 0.01, 7)

    assert main([*base, "--epochs", "3", "--optimizer", "SGD", "--loss-weight", "depth=2",
                 "--out", str(tmp_path / "sgd")]) == 0
    assert "retrain oracle: approximate: the model was trained with sgd" in capsys.readouterr().out
    _, card = load_checkpoint(tmp_path / "sgd")
    assert card.training["optimizer"] == "sgd" and card.training["loss_weights"] == {"depth": 2.0}

    assert main([*base, "--lr", "0.01", "--out", str(tmp_path / "no-epochs")]) == 2
    assert "needs its number of epochs (--epochs N)" in capsys.readouterr().err
    assert main([*base, "--epochs", "2", "--loss-weight", "colour=1", "--out", str(tmp_path / "bad")]) == 2
    assert "loss weights name ['colour'], which are not tasks of the model" in capsys.readouterr().err
    assert not (tmp_path / "no-epochs.json").exists() and not (tmp_path / "bad.json").exists()
