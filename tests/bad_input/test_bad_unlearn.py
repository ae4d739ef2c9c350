"""The bad-input catalogue on the CLI: every entry ends in exit status 2 and one message that
names the bad value (and, where there is a list, what is accepted), with no traceback; the input
checkpoint stays byte-identical, nothing is written under --out and no run is left running."""

import hashlib
import io
import pickle
import zipfile

import numpy as np
import pytest

from core.cli import main
from core.ledger import Ledger


def _digest(path):
    return {suffix: hashlib.sha256(path.with_suffix(suffix).read_bytes()).hexdigest()
            for suffix in (".json", ".safetensors")}


def _dataset(root, image):
    """A dataset folder in the .npy layout whose first training image is `image`."""
    folder = root / "train" / "image"
    folder.mkdir(parents=True)
    np.save(folder / "0.npy", image, allow_pickle=True)
    return root


def _pickled_weights(model):
    model.with_suffix(".safetensors").write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))


def _zipped_weights(model):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("data.pkl", b"not a tensor file")
    model.with_suffix(".safetensors").write_bytes(buffer.getvalue())


def _truncated_weights(model):
    weights = model.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes()[:1000])


def _not_json(model):
    model.with_suffix(".json").write_text("{ this is not json")


# (case id, extra arguments, how to spoil the model or the data first, fragments of the message)
CASES = [
    ("empty selection", ["--instances", ""], None, ["no instance"]),
    ("unknown id", ["--instances", "3,999999"], None, ["unknown instance ids 999999"]),
    ("duplicate ids", ["--instances", "3,3"], None, ["duplicate instance ids 3"]),
    ("negative id", ["--instances", "-4"], None, ["unknown instance ids -4", "ids from 0 to 799"]),
    ("huge range", ["--instances", "0-100000000000"], None, ["0-100000000000", "800 training"]),
    ("not an id", ["--instances", "3,seven"], None, ["seven", "e.g. 3, 17, 40-45"]),
    ("unknown task", ["--instances", "3", "--tasks", "height"], None, ["height", "accepted"]),
    ("every instance", ["--instances", "0-799"], None, ["retained"]),
    ("unknown config key", ["--instances", "3", "--set", "learning_rate=0.1"], None,
     ["learning_rate"]),
    ("negative lr", ["--instances", "3", "--set", "lr=-1"], None, ["lr", "-1"]),
    ("NaN lr", ["--instances", "3", "--set", "lr=nan"], None, ["lr", "nan"]),
    ("Inf lr", ["--instances", "3", "--set", "lr=inf"], None, ["lr", "inf"]),
    ("non-numeric steps", ["--instances", "3", "--set", "steps=many"], None, ["steps", "many"]),
    ("unknown method", ["--instances", "3", "--method", "forgetful"], None, ["forgetful", "accepted"]),
    ("device not there", ["--instances", "3", "--set", "device=tpu"], None, ["tpu"]),
    ("missing dataset folder", ["--instances", "3", "--data", "{tmp}/nowhere"], None, ["nowhere"]),
    ("dataset with missing files", ["--instances", "3", "--data", "{tmp}/partial"],
     lambda model, tmp: _dataset(tmp / "partial", np.zeros((3, 8, 8), np.float32)), ["partial"]),
    ("pickled object array", ["--instances", "3", "--data", "{tmp}/pickled"],
     lambda model, tmp: _dataset(tmp / "pickled", np.array([{"x": 1}], dtype=object)), ["pickled"]),
    ("card not JSON", ["--instances", "3"], lambda model, tmp: _not_json(model), ["JSON"]),
    ("weights a pickle", ["--instances", "3"], lambda model, tmp: _pickled_weights(model), ["weights"]),
    ("weights a zip", ["--instances", "3"], lambda model, tmp: _zipped_weights(model), ["weights"]),
    ("weights truncated", ["--instances", "3"], lambda model, tmp: _truncated_weights(model),
     ["weights"]),
]


@pytest.mark.parametrize("name, extra, spoil, fragments", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_named_and_loses_nothing(name, extra, spoil, fragments, street_copy, tmp_path,
                                               use_cache, capsys, monkeypatch):
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("a user's file was unpickled"))
    if spoil is not None:
        spoil(street_copy, tmp_path)
    before = _digest(street_copy)
    out = tmp_path / "forgot"
    args = ["unlearn", "--model", str(street_copy), "--method", "grad_ascent", "--set", "steps=1",
            "--device", "cpu", "--out", str(out), *[a.format(tmp=tmp_path) for a in extra]]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, f"{name}: exit {code}, stderr {err!r}"
    assert "Traceback" not in err and err.startswith("mtu unlearn: error:"), err
    for fragment in fragments:
        assert fragment.lower() in err.lower(), f"{name}: {fragment!r} not in {err!r}"
    assert len(err.strip().splitlines()) == 1, err
    assert _digest(street_copy) == before
    assert not out.with_suffix(".json").exists() and not out.with_suffix(".safetensors").exists()
    assert all(row["status"] != "running" for row in Ledger().runs())
