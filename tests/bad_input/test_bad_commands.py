"""The bad-input catalogue for what every command shares: a model card whose metrics are not
numbers, a disk that is full or read-only, an input nested too deeply, a ledger database that
fails. Each ends in exit 2 and one line naming the file and the fault, with no traceback; the
inputs stay byte-identical and nothing partial is left. A bug (a TypeError) stays a traceback."""

from __future__ import annotations

import errno
import json
import os
import sqlite3

import pytest
from bad_input_helpers import checkpoint_digest, digest

from core import cli
from core.cli import main
from core.ledger import Ledger

# (case id, the card's metrics, fragments of the message)
BAD_METRICS = [
    ("a string", {"val": {"depth": {"abs_err": "high"}}}, ["val/depth/abs_err", '"high"']),
    ("a boolean", {"train": {"depth": {"abs_err": True}}}, ["train/depth/abs_err", "true"]),
    ("null", {"val": {"segmentation": {"miou": None}}}, ["val/segmentation/miou", "null"]),
    ("a task that is a number", {"val": {"depth": 0.3}}, ["val/depth", "0.3"]),
    ("a before/after row", {"before_after": [{"task": "depth", "split": "forget", "metric": "abs_err",
                                              "before": "0.1", "after": 0.2}]},
     ["before_after/depth/abs_err before", '"0.1"']),
]


def _spoil_metrics(model, metrics):
    card = model.with_suffix(".json")
    data = json.loads(card.read_text())
    data["metrics"] = metrics
    card.write_text(json.dumps(data))


@pytest.mark.parametrize("name, metrics, fragments", BAD_METRICS, ids=[c[0] for c in BAD_METRICS])
def test_a_metric_that_is_not_a_number_is_refused_naming_the_card(name, metrics, fragments, street_copy,
                                                                   refused):
    _spoil_metrics(street_copy, metrics)
    refused("info", main(["info", str(street_copy)]), str(street_copy.with_suffix(".json")),
            "metrics must be numbers", *fragments)


def test_unlearn_refuses_a_card_with_a_string_metric_and_writes_nothing(street_copy, tmp_path, use_cache,
                                                                         refused):
    _spoil_metrics(street_copy, {"val": {"depth": {"abs_err": "high"}}})
    before = checkpoint_digest(street_copy)
    code = main(["unlearn", "--model", str(street_copy), "--instances", "3", "--method", "grad_ascent",
                 "--set", "steps=1", "--device", "cpu", "--out", str(tmp_path / "forgot")])
    refused("unlearn", code, "abs_err", '"high"')
    assert checkpoint_digest(street_copy) == before
    assert not any(p.name.startswith("forgot") for p in tmp_path.iterdir())


def _full_disk_in_save_file(monkeypatch):
    """safetensors' save_file writes half a file, then the disk is full."""
    from core import checkpoints

    def save_file(state, path, metadata=None):
        with open(path, "wb") as handle:
            handle.write(b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(checkpoints, "save_file", save_file)


def _read_only_at_rename(monkeypatch):
    """The first rename of a temporary file into place fails: the file system went read-only."""
    from core import checkpoints

    def replace(source, target, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(source), str(target))

    monkeypatch.setattr(checkpoints.os, "replace", replace)


@pytest.mark.parametrize("fault, strerror", [(_full_disk_in_save_file, os.strerror(errno.ENOSPC)),
                                             (_read_only_at_rename, os.strerror(errno.EROFS))],
                         ids=["disk full while saving", "read-only at rename"])
def test_a_disk_fault_while_saving_is_one_line_and_leaves_nothing_partial(fault, strerror, street_copy,
                                                                          tmp_path, use_cache,
                                                                          monkeypatch, capsys):
    before = checkpoint_digest(street_copy)
    out_folder = tmp_path / "results"
    out_folder.mkdir()
    with monkeypatch.context() as patch:
        fault(patch)
        code = main(["unlearn", "--model", str(street_copy), "--instances", "3", "--method", "grad_ascent",
                     "--set", "steps=1", "--device", "cpu", "--out", str(out_folder / "forgot")])
    err = capsys.readouterr().err
    line = err.strip().split("\r")[-1].splitlines()[-1]  # after the progress bar's last redraw
    assert code == 2 and "Traceback" not in err, err
    assert line.startswith("mtu unlearn: error:") and strerror in line and str(out_folder) in line, err
    assert ".tmp" in line  # the path it was writing
    assert list(out_folder.iterdir()) == []
    assert checkpoint_digest(street_copy) == before
    (run,) = Ledger().runs()
    assert run["status"] == "failed" and strerror in run["error"]


def test_an_unreadable_input_is_one_line_naming_it(street_copy, monkeypatch, refused):
    from core import checkpoints

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(street_copy.with_suffix(".json")))

    monkeypatch.setattr(checkpoints, "read_card", denied)
    refused("info", main(["info", str(street_copy)]), str(street_copy.with_suffix(".json")),
            os.strerror(errno.EACCES))


def test_a_card_nested_too_deeply_is_one_line_naming_it(street_copy, refused):
    card = street_copy.with_suffix(".json")
    card.write_text('{"benchmark": ' + "[" * 100_000 + "]" * 100_000 + "}")
    before = digest(card)
    refused("info", main(["info", str(street_copy)]), str(card))
    assert digest(card) == before


def test_a_recursion_anywhere_is_one_line(monkeypatch, refused):
    def deep(args):
        return deep(args)

    monkeypatch.setattr(cli, "cmd_history", deep)
    refused("history", main(["history"]), "recursion")


def test_a_database_error_is_one_line(monkeypatch, refused):
    def broken(self, *args, **kwargs):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(Ledger, "runs", broken)
    refused("history", main(["history"]), "database disk image is malformed")


def test_a_bug_stays_a_traceback(monkeypatch):
    def bug(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(cli, "cmd_history", bug)
    with pytest.raises(TypeError):
        main(["history"])
