"""The bad-input catalogue for datasets, imports, generated benchmarks and forget requests: each
entry ends in exit status 2 and one line naming the bad value or file, with no traceback; the
call returns (a FIFO in a dataset does not block it), nothing is written and every input stays
byte-identical."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading

import numpy as np
import pytest
import torch
from bad_input_helpers import checkpoint_digest, digest

from core.cli import main
from core.data.sources import DataSource
from core.models import build_model

TINY = {"n_train": 12, "n_val": 10, "size": (32, 32)}
NESTED = "[" * 100_000 + "]" * 100_000


def _run(argv: list[str], blocker=None) -> int:
    """main(argv) in a thread that must return within 120 s; a FIFO it blocks on is released by
    opening the FIFO's other end, so a failing test does not hang the session."""
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.update(code=main(argv)), daemon=True)
    thread.start()
    thread.join(120)
    if thread.is_alive() and blocker is not None:
        with contextlib.suppress(OSError):
            os.close(os.open(blocker, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(30)
    assert not thread.is_alive(), f"mtu {' '.join(argv)} did not return"
    return outcome["code"]


def _copy(benchmark: str, data_cache, to):
    shutil.copytree(DataSource(benchmark=benchmark, **TINY).resolve(cache_dir=data_cache), to)
    return to


def _edit_meta(root, change) -> None:
    meta = json.loads((root / "meta.json").read_text())
    change(meta)
    (root / "meta.json").write_text(json.dumps(meta))


def _fifo(path):
    path.unlink()
    os.mkfifo(path)
    return path


# --- mtu import ---------------------------------------------------------------------------------

def _huge_channels(root, tmp):
    _edit_meta(root, lambda meta: meta["tasks"]["segmentation"].update(channels=2**40,
                                                                       class_names=[]))


def _path_task_name(root, tmp):
    _edit_meta(root, lambda meta: meta["tasks"].update({"../x": meta["tasks"].pop("depth")}))


def _diverged(root, tmp):
    state = torch.load(tmp / "weights.pth", weights_only=True)
    state["heads.depth.predict.bias"][0] = float("inf")
    torch.save(state, tmp / "weights.pth")


IMPORT_CASES = [
    ("2**40 channels in meta.json", [], _huge_channels,
     ["meta.json", "1099511627776 channels", "at most 65,536"]),
    ("FIFO named 0.npy", [], lambda root, tmp: _fifo(root / "train" / "image" / "0.npy"),
     ["image/0.npy", "not a regular file"]),
    ("deeply nested meta.json", [], lambda root, tmp: (root / "meta.json").write_text(NESTED),
     ["meta.json", "nested deeper than"]),
    ("meta.json not UTF-8", [], lambda root, tmp: (root / "meta.json").write_bytes(b"{\xff}"),
     ["meta.json", "utf-8"]),
    ("5000-digit number in meta.json", [],
     lambda root, tmp: (root / "meta.json").write_text('{"tasks": ' + "9" * 5000 + "}"),
     ["meta.json", "5000 digits"]),
    ("task name with a path in meta.json", [], _path_task_name,
     ["meta.json", "'../x'", "[A-Za-z0-9_]"]),
    ("NaN weights", [], _diverged, ["weights.pth", "NaN or Inf", "heads.depth.predict.bias"]),
    ("training ids not UTF-8", ["--train-ids", "{tmp}/ids.txt"],
     lambda root, tmp: (tmp / "ids.txt").write_bytes(b"1, 2\n\xff"), ["ids.txt", "utf-8"]),
    ("20-digit training id", ["--train-ids", "{tmp}/ids.txt"],
     lambda root, tmp: (tmp / "ids.txt").write_text("1, 99999999999999999999"),
     ["ids.txt", "99999999999999999999", "at most 18 digits"]),
]


@pytest.mark.parametrize("name, extra, spoil, fragments", IMPORT_CASES,
                         ids=[c[0] for c in IMPORT_CASES])
def test_bad_import_input_is_named_and_writes_nothing(name, extra, spoil, fragments, tmp_path,
                                                      data_cache, refused):
    root = _copy("synthetic-indoor", data_cache, tmp_path / "data")
    torch.manual_seed(0)
    model = build_model({"name": "small_cnn", "args": {"width": 4}},
                        list(DataSource.parse(str(root)).open("train").tasks.values()))
    torch.save(model.state_dict(), tmp_path / "weights.pth")
    blocker = spoil(root, tmp_path)
    before = digest(tmp_path)
    out = tmp_path / "imported"
    code = _run(["import", str(tmp_path / "weights.pth"), "--arch", "small_cnn", "--arg", "width=4",
                 "--data", str(root), "--out", str(out),
                 *[a.format(tmp=tmp_path) for a in extra]], blocker)
    refused("import", code, *fragments)
    assert digest(tmp_path) == before
    assert not list(tmp_path.glob("imported*"))


# --- mtu unlearn --data, and the model card -------------------------------------------------------

def _card_task_name(model, data):
    card = json.loads(model.with_suffix(".json").read_text())
    card["tasks"][0]["name"] = "a/b"
    model.with_suffix(".json").write_text(json.dumps(card))


UNLEARN_CASES = [
    ("FIFO named 3.npy under --data", ["--data", "{data}"],
     lambda model, data: _fifo(data / "train" / "depth" / "3.npy"), ["depth/3.npy", "not a regular file"]),
    ("other class count under --data", ["--data", "{indoor}"], None,
     ["'segmentation'", "7 classes", "has 12", "indoor"]),
    ("deeply nested card", [], lambda model, data: model.with_suffix(".json").write_text(NESTED),
     ["street.json", "nested"]),
    ("task name with a path in the card", [], _card_task_name, ["street.json", "'a/b'", "[A-Za-z0-9_]"]),
    ("20-digit instance id", ["--instances", "99999999999999999999"], None,
     ["id 999999999999", "has 20 digits", "ids from 0 to 799"]),
    ("5000-digit instance id", ["--instances", "3," + "9" * 5000], None,
     ["has 5000 digits", "ids from 0 to 799"]),
    ("5000-digit negative id", ["--instances", "-" + "9" * 5000], None,
     ["'-99999999999999999", "e.g. 3, 17, 40-45"]),
]


@pytest.mark.parametrize("name, extra, spoil, fragments", UNLEARN_CASES,
                         ids=[c[0] for c in UNLEARN_CASES])
def test_bad_unlearn_data_is_named_and_writes_nothing(name, extra, spoil, fragments, street_copy,
                                                      tmp_path, data_cache, use_cache, refused):
    data = _copy("synthetic-street", data_cache, tmp_path / "street-data")
    indoor = _copy("synthetic-indoor", data_cache, tmp_path / "indoor-data")
    blocker = spoil(street_copy, data) if spoil else None
    before = {**checkpoint_digest(street_copy), **digest(data, indoor)}
    out = tmp_path / "forgot"
    options = [a.format(data=data, indoor=indoor) for a in extra]
    instances = [] if "--instances" in options else ["--instances", "3"]
    code = _run(["unlearn", "--model", str(street_copy), *instances, "--method", "grad_ascent",
                 "--set", "steps=1", "--device", "cpu", "--out", str(out), *options], blocker)
    refused("unlearn", code, *fragments)
    assert {**checkpoint_digest(street_copy), **digest(data, indoor)} == before
    assert not list(tmp_path.glob("forgot*"))


# --- mtu generate ---------------------------------------------------------------------------------

GENERATE_CASES = [
    ("non-empty folder", lambda tmp: (tmp / "out").mkdir() or (tmp / "out" / "mine.txt").write_text("x"),
     [], ["out is not empty", "mine.txt"]),
    ("onto a file", lambda tmp: (tmp / "out").write_text("x"), [], ["out exists and is not a folder"]),
    ("huge size", None, ["--size", "100000x100000"], ["size=[100000, 100000]", "8 to 2048"]),
    ("10**12 images", None, ["--n-train", str(10**12)], ["n_train=1000000000000", "1 to 100000"]),
    ("zero images", None, ["--n-val", "0"], ["n_val=0", "1 to 100000"]),
    ("negative images", None, ["--n-train", "-5"], ["n_train=-5"]),
]


@pytest.mark.parametrize("name, prepare, extra, fragments", GENERATE_CASES,
                         ids=[c[0] for c in GENERATE_CASES])
def test_bad_generate_arguments_write_nothing(name, prepare, extra, fragments, tmp_path, refused):
    if prepare:
        prepare(tmp_path)
    before = digest(tmp_path)
    code = _run(["generate", "synthetic-street", str(tmp_path / "out"), "--n-train", "3",
                 "--n-val", "2", "--size", "16x16", *extra])
    refused("generate", code, *fragments)
    assert digest(tmp_path) == before
    assert [p.name for p in tmp_path.iterdir()] == (["out"] if prepare else [])


def test_a_good_generate_writes_a_dataset_that_opens(tmp_path):
    assert main(["generate", "synthetic-street", str(tmp_path / "out"), "--n-train", "3",
                 "--n-val", "2", "--size", "16x16"]) == 0
    assert np.load(tmp_path / "out" / "train" / "image" / "0.npy").shape == (16, 16, 3)
