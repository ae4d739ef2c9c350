"""The bad-input catalogue for plugins: a `--plugin` module that raises, does not parse, exits or
is named like a file path, and an entry point under `mtunlearn.architectures` that does the same,
each end in exit 2 and one line naming the module, what it raised and what is accepted."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from bad_input_helpers import checkpoint_digest

from core import plugins
from core.cli import main
from core.ledger import Ledger

# (case id, the plugin module's source, fragments of the message)
BROKEN_MODULES = [
    ("raises on import", "raise RuntimeError('no GPU here\\nsecond line of the story')",
     ["RuntimeError", "no GPU here"]),
    ("syntax error", "def broken(:\n    pass\n", ["SyntaxError", "line 1"]),
    ("sys.exit(0)", "import sys\nsys.exit(0)\n", ["SystemExit", "exit"]),
    ("sys.exit(3)", "import sys\nsys.exit(3)\n", ["SystemExit", "3"]),
    ("missing dependency", "import no_such_dependency_xyz\n", ["no_such_dependency_xyz"]),
]


@pytest.mark.parametrize("name, source, fragments", BROKEN_MODULES, ids=[c[0] for c in BROKEN_MODULES])
def test_a_plugin_that_fails_on_import_is_named(name, source, fragments, tmp_path, monkeypatch, refused):
    module = "broken_plugin_" + "".join(c if c.isalnum() else "_" for c in name)
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    err = refused("info", main(["info", "--architectures", "--plugin", module]), module, *fragments)
    assert "second line" not in err


@pytest.mark.parametrize("module", ["./my_models.py", "my_models.py", "a/b", "../x", "pkg\\mod"])
def test_a_plugin_named_like_a_path_asks_for_a_module_name(module, refused):
    refused("info", main(["info", "--architectures", "--plugin", module]), repr(module), "module name",
            "PYTHONPATH")


def test_a_path_to_a_python_file_suggests_its_module_name(refused):
    refused("info", main(["info", "--plugin", "./plugins/my_models.py"]), "e.g. my_models")


def test_an_exiting_plugin_stops_unlearn_before_anything_is_written(street_copy, tmp_path, use_cache,
                                                                     monkeypatch, refused):
    (tmp_path / "exiting_plugin.py").write_text("import sys\nsys.exit(0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = checkpoint_digest(street_copy)
    out = tmp_path / "forgot"
    code = main(["unlearn", "--model", str(street_copy), "--instances", "3", "--method", "grad_ascent",
                 "--set", "steps=1", "--device", "cpu", "--out", str(out), "--plugin", "exiting_plugin"])
    refused("unlearn", code, "exiting_plugin", "SystemExit")
    assert checkpoint_digest(street_copy) == before
    assert not any(p.name.startswith("forgot") for p in tmp_path.iterdir())
    assert Ledger().runs() == []


def _entry_points(monkeypatch, load):
    point = SimpleNamespace(name="theirs", value="their_pkg.models", load=load)
    monkeypatch.setattr(plugins, "entry_points",
                        lambda group: [point] if group == plugins.ARCHITECTURES else [])
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.setattr(plugins, "_errors", {})


def _exit():
    raise SystemExit(0)


def _raise():
    raise ImportError("cannot import name 'Thing' from 'torchvision'\nmore")


@pytest.mark.parametrize("load, fragments", [(_raise, ["ImportError", "cannot import name 'Thing'"]),
                                             (_exit, ["SystemExit"]),
                                             (lambda: 1 / 0, ["ZeroDivisionError"])],
                         ids=["raises", "sys.exit(0)", "zero division"])
def test_a_broken_entry_point_is_named(load, fragments, monkeypatch, refused):
    _entry_points(monkeypatch, load)
    err = refused("info", main(["info", "--architectures"]), "theirs", "their_pkg.models",
                  "mtunlearn.architectures", *fragments)
    assert "more" not in err.split("cannot import name")[-1]
