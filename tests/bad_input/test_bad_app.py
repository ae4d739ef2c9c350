"""The bad-input catalogue on the dashboard: every hostile input ends in a page message (st.error
or st.warning) that names the bad value, never an uncaught exception; the session's selection,
the original model and the ledger survive."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from bad_input_helpers import digest
from streamlit.testing.v1 import AppTest

from core.checkpoints import SAMPLE_MODELS_DIR

MAIN = str(Path(__file__).resolve().parents[2] / "app" / "main.py")
STREET = SAMPLE_MODELS_DIR / "synthetic-street"
WEIGHTS = STREET.with_suffix(".safetensors").read_bytes()
CARD = json.loads(STREET.with_suffix(".json").read_text())


def _app(**state) -> AppTest:
    app = AppTest.from_file(MAIN, default_timeout=900)
    for key, value in state.items():
        app.session_state[key] = value
    return app.run()


def _errors(app) -> str:
    assert not app.exception, app.exception
    return " ".join(e.value for e in app.error)


def _upload(app, card: bytes, weights: bytes = WEIGHTS, card_name: str = "card.json") -> AppTest:
    app.radio(key="model_source").set_value("Upload").run()
    app.file_uploader(key="upload_weights").set_value(("w.safetensors", weights, "application/octet-stream"))
    app.file_uploader(key="upload_card").set_value((card_name, card, "application/json"))
    return app.run()


def _uploads(home: Path) -> list[Path]:
    """Every file stored under MTU_HOME/uploads (hidden partial files too)."""
    return sorted(p for p in (home / "uploads").rglob("*") if p.is_file())


def _card(**changes) -> bytes:
    return json.dumps({**CARD, **changes}).encode()


def test_a_deeply_nested_card_is_named_and_not_kept(mtu_home):
    app = _upload(_app(), b'{"metrics": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", card_name="deep.json")
    errors = _errors(app)
    assert "deep.json" in errors and "nested" in errors
    assert _uploads(mtu_home) == []  # a refused upload is removed from disk
    assert app.session_state["model_path"] == str(SAMPLE_MODELS_DIR / "synthetic-indoor")  # kept in use
    assert "keep working on synthetic-indoor" in app.caption[-1].value


def test_a_card_with_string_metrics_is_named(mtu_home):
    metrics = {**CARD["metrics"], "val": {"depth": {"abs_err": "high"}}}
    app = _upload(_app(), _card(metrics=metrics), card_name="strings.json")
    errors = _errors(app)
    assert "strings.json" in errors and "abs_err" in errors and "high" in errors
    assert _uploads(mtu_home) == []


def test_a_card_and_weights_that_do_not_match_are_named(mtu_home):
    indoor = (SAMPLE_MODELS_DIR / "synthetic-indoor.json").read_bytes()
    app = _upload(_app(), indoor, card_name="indoor.json")
    assert "indoor.json" in _errors(app)
    assert _uploads(mtu_home) == []


def test_an_upload_over_the_cap_is_refused_before_it_is_stored(mtu_home, monkeypatch):
    from core.cli import STREAMLIT_OPTIONS

    monkeypatch.setitem(STREAMLIT_OPTIONS, "server.maxUploadSize", 0.001)  # MB: about 1 kB
    app = _upload(_app(), _card())
    errors = _errors(app)
    assert "w.safetensors" in errors and "0.001 MB" in errors
    assert _uploads(mtu_home) == []


@pytest.mark.parametrize("kind", ["folder", "text file", "empty weights"])
def test_a_checkpoint_path_that_is_no_checkpoint_is_named(tmp_path, kind):
    if kind == "folder":
        typed = tmp_path / "folder"
        typed.mkdir()
    elif kind == "text file":
        typed = tmp_path / "notes.txt"
        typed.write_text("not a checkpoint")
    else:
        typed = tmp_path / "empty.safetensors"
        typed.write_bytes(b"")
        typed.with_suffix(".json").write_bytes(json.dumps(CARD).encode())
    app = _app(model_source="Path on this machine", model_typed_path=str(typed))
    assert typed.name in _errors(app)


def test_a_dataset_folder_that_is_a_file_or_another_benchmark_is_named(tmp_path):
    from core.data import generate

    indoor = generate("synthetic-indoor", tmp_path / "indoor", seed=0, n_train=8, n_val=6, size=(32, 32))
    note = tmp_path / "notes.txt"
    note.write_text("not a folder")
    app = _app(model_name="synthetic-street", data_root=str(note))
    assert "notes.txt" in _errors(app)
    app.text_input(key="data_root").input(str(indoor)).run()
    assert str(indoor) in _errors(app)
    street = generate("synthetic-street", tmp_path / "street", seed=0, n_train=8, n_val=6, size=(32, 32))
    app.text_input(key="data_root").input(str(street)).run()  # the right tasks, too few instances
    assert f"{street} lacks 792 of the model's 800 training ids" in _errors(app)
    app.text_input(key="data_root").input("").run()
    assert not _errors(app)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_ledger_is_named_on_the_history_page(mtu_home, damage):
    from core.ledger import Ledger

    path = mtu_home / "ledger.sqlite"
    Ledger(path).close()
    path.write_bytes(b"not a database" * 100 if damage == "garbage" else path.read_bytes()[:200])
    before = digest(path)
    app = _app()
    app.switch_page("pages/history.py").run()
    assert str(path) in _errors(app)
    assert digest(path) == before


@pytest.fixture()
def plugin_folder(tmp_path, monkeypatch):
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('boom on import')\n")
    (tmp_path / "broken_syntax_plugin.py").write_text("def broken(:\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MTU_APP_PLUGINS", "raising_plugin,broken_syntax_plugin")
    yield tmp_path
    for name in ("raising_plugin", "broken_syntax_plugin"):
        sys.modules.pop(name, None)


@pytest.mark.parametrize("plugin", ["raising_plugin", "broken_syntax_plugin"])
def test_a_plugin_that_fails_on_import_is_named(plugin_folder, plugin):
    app = _app(plugins=[plugin])
    assert f"'{plugin}'" in _errors(app)


def test_a_plugin_not_named_at_start_up_is_refused(monkeypatch):
    monkeypatch.setenv("MTU_APP_PLUGINS", "my_models")
    imported = set(sys.modules)
    app = _app(plugins=["antigravity"], selection=[1, 2])
    errors = _errors(app)
    assert "'antigravity'" in errors and "my_models" in errors and "mtu app --plugin" in errors
    assert "antigravity" not in set(sys.modules) - imported
    assert app.session_state["selection"] == [1, 2]


def test_the_worker_refuses_a_job_naming_a_plugin_not_allowed(monkeypatch):
    from core.checkpoints import load_checkpoint
    from core.jobs import submit
    from core.ledger import Ledger
    from core.requests import ForgetRequest

    monkeypatch.setenv("MTU_APP_PLUGINS", "")
    imported = set(sys.modules)
    _, card = load_checkpoint(STREET)
    request = ForgetRequest.build([1, 2], None, card.train_ids, [t["name"] for t in card.tasks])
    (run_id,) = submit(Ledger(), STREET, card, request, "grad_ascent", {"steps": 1}, plugins=["antigravity"])
    (row,) = Ledger().runs(run_id=run_id)
    assert row["status"] == "failed" and "'antigravity'" in row["error"] and "not allowed" in row["error"]
    assert "antigravity" not in set(sys.modules) - imported


def test_a_deleted_result_is_named_and_its_record_kept(mtu_home):
    from core.checkpoints import checkpoint_paths, load_checkpoint
    from core.ledger import Ledger
    from core.unlearning.runner import run_request

    model, card = load_checkpoint(STREET)
    ledger = Ledger()
    run_request(model, card, STREET, [1, 2, 3], None, "grad_ascent", {"steps": 2}, ledger.results_folder(),
                ledger=ledger, source="dashboard", store=True)
    (row,) = ledger.runs()
    weights = checkpoint_paths(row["result_path"])[0]
    weights.unlink()
    app = _app(model_name="synthetic-street", selection=[1, 2, 3])
    app.switch_page("pages/unlearn.py").run()
    assert not app.exception
    warnings = " ".join(w.value for w in app.warning)
    assert str(weights) in warnings and "missing" in warnings
    assert not app.get("download_button")
    app.switch_page("pages/interference.py").run()
    assert not app.exception
    warnings = " ".join(w.value for w in app.warning)
    assert str(weights) in warnings and "missing" in warnings
    assert not app.get("download_button")
    shown = " ".join(str(d.value) for d in app.dataframe) + " ".join(m.value for m in app.markdown)
    assert "before" in shown and "grad_ascent" in shown  # the recorded before/after and the run
    assert Ledger().runs()[0]["status"] == "done" and os.path.exists(STREET.with_suffix(".json"))


def test_an_upload_cut_off_while_it_is_written_leaves_nothing(mtu_home, monkeypatch):
    from app.state import save_upload

    replace = Path.replace

    def disk_full_on_the_card(self, target):
        if Path(target).name == "model.json":
            raise OSError(28, "No space left on device")
        return replace(self, target)

    monkeypatch.setattr(Path, "replace", disk_full_on_the_card)
    with pytest.raises(OSError, match="No space left"):
        save_upload(WEIGHTS, _card())
    assert _uploads(mtu_home) == []


def test_an_id_of_thousands_of_digits_is_named_on_the_select_page():
    app = _app(selection=[3])
    app.switch_page("pages/select.py").run()
    app.text_input(key="id_search").input("1" * 5000).run()
    errors = _errors(app)
    assert "5000 digits" in errors and "ids from 0 to" in errors and len(errors) < 300
    assert app.session_state["selection"] == [3]
