"""The dashboard on models it did not train: a plugin architecture imported from a plain state
dict, a card that records no training data, and a model that declares no optional capability."""

import json
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest
from torch import nn

from core.checkpoints import ModelCard, save_checkpoint
from core.data import generate
from core.importing import import_checkpoint
from core.models import load_plugins, register_architecture
from core.models.registry import unregister_architecture

ROOT = Path(__file__).resolve().parents[2]
MAIN = str(ROOT / "app" / "main.py")
SELECT = str(ROOT / "app" / "pages" / "select.py")
EXAMPLE = ROOT / "examples" / "own_model"


@pytest.fixture(scope="module")
def street_root(tmp_path_factory):
    return generate("synthetic-street", tmp_path_factory.mktemp("own-app") / "data", seed=0,
                    n_train=16, n_val=12, size=(32, 32))


@pytest.fixture(scope="module")
def imported(street_root, tmp_path_factory):
    sys.path.insert(0, str(EXAMPLE))
    load_plugins(["my_models"])
    from my_models import TwoScaleNet

    folder = tmp_path_factory.mktemp("imported")
    torch.save(TwoScaleNet({"segmentation": 7, "depth": 1}).state_dict(), folder / "plain.pt")
    import_checkpoint(folder / "plain.pt", {"name": "two_scale_net"}, street_root,
                      renames=[("decoders.", "heads.")], out=folder / "imported")
    yield folder / "imported"
    sys.path.remove(str(EXAMPLE))


@pytest.fixture(autouse=True)
def started_with_my_models(monkeypatch):
    monkeypatch.setenv("MTU_APP_PLUGINS", "my_models")  # as `mtu app --plugin my_models` does


def _open(path, **state) -> AppTest:
    app = AppTest.from_file(MAIN, default_timeout=900)
    app.session_state["model_source"] = "Path on this machine"
    app.session_state["model_typed_path"] = str(path)
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def test_an_imported_plugin_model_opens_and_maps(imported):
    app = _open(imported, plugins=["my_models"])
    assert not app.exception and not app.error
    assert any("two_scale_net (width=8) from plugin my_models" in b.value for b in app.markdown)
    assert "val" in app.dataframe[0].value.columns
    app.switch_page("pages/select.py").run()
    assert not app.exception and len(app.dataframe[0].value) == 16
    assert not app.info or "no encoder features" not in app.info[0].value


def test_a_card_without_training_data_asks_for_the_folder(imported, street_root, tmp_path):
    card = json.loads(imported.with_suffix(".json").read_text())
    card["training"], card["train_ids"] = {}, []
    (tmp_path / "m.json").write_text(json.dumps(card))
    (tmp_path / "m.safetensors").write_bytes(imported.with_suffix(".safetensors").read_bytes())
    app = _open(tmp_path / "m", plugins=["my_models"])
    assert not app.exception
    assert "records no training data" in app.error[0].value and "dataset folder" in app.error[0].value
    app.text_input(key="data_root").input(str(street_root)).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert any("Training instances:** 16" in b.value for b in app.markdown)


def test_a_missing_plugin_is_named(imported, tmp_path):
    for suffix in (".json", ".safetensors"):  # a path the dashboard has not cached yet
        (tmp_path / f"m{suffix}").write_bytes(imported.with_suffix(suffix).read_bytes())
    unregister_architecture("two_scale_net")
    try:
        app = _open(tmp_path / "m")
        assert not app.exception
        assert "plugin module 'my_models', which is not loaded" in app.error[0].value
    finally:
        import importlib

        import my_models
        importlib.reload(my_models)


class BareNet(nn.Module):
    """Only the contract: no features, no explain layer."""

    def __init__(self, tasks):
        super().__init__()
        self.tasks = {t.name: t for t in tasks}
        self.trunk = nn.Conv2d(3, 4, 3, padding=1)
        self.heads = nn.ModuleDict({t.name: nn.Conv2d(4, t.channels, 1) for t in tasks})

    def forward(self, x):
        rep = self.trunk(x)
        return {name: task.activate(self.heads[name](rep)) for name, task in self.tasks.items()}

    def shared_parameters(self):
        return self.trunk.parameters()

    def task_parameters(self, task):
        return self.heads[task].parameters()


def test_a_model_without_features_gets_a_note_not_a_traceback(street_root, tmp_path):
    from core.data.sources import DataSource
    from core.models import build_model

    register_architecture("bare_net")(lambda tasks: BareNet(tasks))
    try:
        source = DataSource.parse(str(street_root))
        tasks = list(source.open("train").tasks.values())
        model = build_model({"name": "bare_net"}, tasks)
        card = ModelCard(benchmark="street", tasks=[], architecture={},
                         training={"data": source.to_dict()}, train_ids=list(range(16)))
        save_checkpoint(model, card, tmp_path / "bare")
        app = AppTest.from_file(SELECT, default_timeout=900)
        app.session_state["model_path"] = str(tmp_path / "bare")
        app.run()
        assert not app.exception
        assert "no encoder features" in app.info[0].value
        assert len(app.dataframe[0].value) == 16
    finally:
        unregister_architecture("bare_net")


def test_a_plugin_model_and_its_data_folder_hold_across_pages(imported, street_root, tmp_path):
    """Issue 19, defect 1: the typed path, the plugin and the dataset folder survive a visit to
    another page, and the other pages work on that model."""
    card = json.loads(imported.with_suffix(".json").read_text())
    card["training"], card["train_ids"] = {}, []  # only the dataset folder names its data
    (tmp_path / "m.json").write_text(json.dumps(card))
    (tmp_path / "m.safetensors").write_bytes(imported.with_suffix(".safetensors").read_bytes())
    app = AppTest.from_file(MAIN, default_timeout=900).run()  # chosen with the widgets, as a person does
    app.multiselect(key="plugins").set_value(["my_models"]).run()
    app.radio(key="model_source").set_value("Path on this machine").run()
    app.text_input(key="model_typed_path").input(str(tmp_path / "m")).run()
    app.text_input(key="data_root").input(str(street_root)).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    for page in ("pages/select.py", "pages/select.py", "pages/model.py", "pages/model.py"):
        app.switch_page(page).run()
        assert not app.exception and not app.error, [e.value for e in app.error]
        assert app.session_state["model_path"] == str(tmp_path / "m")
    assert app.text_input(key="model_typed_path").value == str(tmp_path / "m")
    assert app.multiselect(key="plugins").value == ["my_models"]
    assert app.text_input(key="data_root").value == str(street_root)
    assert any("Training instances:** 16" in b.value for b in app.markdown)


def test_an_imported_model_without_recipe_says_its_oracle_is_approximate_and_takes_one(imported, street_root):
    """Issue 19, defect 8: the oracle of an imported model silently used the engine's recipe and
    its time estimate said "about 0 s". Without a recipe it says it is approximate and that its
    time is unknown; the Model page takes the recipe, and the copy it saves has an exact oracle."""
    from core.checkpoints import read_card

    app = _open(imported, plugins=["my_models"], selection=[1, 2])
    assert not app.exception and not app.error
    unknown = "Training recipe:** unknown (the retrain oracle is approximate)"
    assert any(unknown in b.value for b in app.markdown)
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    label = app.checkbox(key="with_oracle").label
    assert "approximate" in label and "time unknown" in label and "about 0 s" not in label
    assert "training recipe is unknown" in app.checkbox(key="with_oracle").proto.help

    app.switch_page("pages/model.py").run()
    app.number_input(key="recipe_epochs").set_value(3)
    app.number_input(key="recipe_batch").set_value(4)
    app.number_input(key="recipe_seconds").set_value(40.0)
    next(b for b in app.button if b.label == "Save a copy of the model with this recipe").click().run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    copy = app.session_state["model_path"]
    assert copy != str(imported) and read_card(imported).training["recipe"] == "unknown"  # untouched
    training = read_card(copy).training
    assert (training["recipe"], training["epochs"], training["batch_size"], training["seconds"]) == (
        "given", 3, 4, 40.0)
    assert training["data"] == read_card(imported).training["data"]
    assert any("Training:** 3 epochs, batch 4" in b.value for b in app.markdown)
    app.switch_page("pages/unlearn.py").run()
    label = app.checkbox(key="with_oracle").label
    assert "approximate" not in label and "about 35 s" in label  # 40 s x the 14 of 16 instances kept
