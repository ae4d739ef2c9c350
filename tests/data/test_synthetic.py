"""The synthetic benchmarks: layout, value ranges, geometric consistency, determinism, caching."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import BENCHMARKS, DatasetError, MTLDataset, generate, get_benchmark, synthetic
from core.data.synthetic import (
    CONFLICT_LEVELS,
    CONTEXT_CLASSES,
    CONTEXT_PARTS,
    INDOOR_CLASSES,
    STREET_CLASSES,
    render,
)

SIZE = (24, 32)
TINY = dict(n_train=3, n_val=2, size=SIZE)


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("sets")
    return {name: generate(name, base / name, workers=1, **TINY) for name in BENCHMARKS}


@pytest.mark.parametrize("name, folders", [
    ("synthetic-indoor", {"image", "label", "depth", "normal"}),
    ("synthetic-street", {"image", "label_7", "depth"}),
    ("synthetic-context", {"image", "label", "human_parts", "saliency", "edge", "normal"}),
    ("synthetic-conflict-low", {"image", "brightness", "darkness"}),
    ("synthetic-conflict-high", {"image", "brightness", "darkness"}),
])
def test_layout_and_meta(sets, name, folders):
    root = sets[name]
    for split, n in (("train", 3), ("val", 2)):
        assert {p.name for p in (root / split).iterdir()} == folders
        for folder in folders:
            assert sorted(p.name for p in (root / split / folder).iterdir()) == [
                f"{i}.npy" for i in range(n)]
    meta = json.loads((root / "meta.json").read_text())
    assert meta["benchmark"] == name and meta["generator_version"] == synthetic.GENERATOR_VERSION
    assert (meta["seed"], meta["n_train"], meta["n_val"], meta["size"]) == (0, 3, 2, list(SIZE))
    assert {spec["folder"] for spec in meta["tasks"].values()} == folders - {"image"}
    ds = MTLDataset(root, "train")
    assert list(ds.tasks) == list(meta["tasks"])


def test_indoor_values():
    for index in range(6):
        out = render("synthetic-indoor", 0, "train", index, SIZE)
        image, label, depth, normal = out["image"], out["label"], out["depth"], out["normal"]
        assert image.dtype == np.float32 and image.shape == (*SIZE, 3)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert label.shape == SIZE and set(np.unique(label)) <= set(range(len(INDOOR_CLASSES)))
        assert depth.shape == (*SIZE, 1) and depth.min() >= 0.0 and (depth > 0).mean() > 0.7
        norms = np.linalg.norm(normal, axis=-1)
        valid = depth[..., 0] > 0
        assert np.allclose(norms[valid], 1.0, atol=1e-4) and np.all(norms[~valid] == 0)
        assert (normal[..., 2][valid] > 0).mean() > 0.5  # most surfaces face the camera (+z)


def test_indoor_labels_depth_and_normals_agree():
    """Floor normals point up, ceiling normals down, wall normals are near horizontal (camera
    pitch is at most 35 degrees); the floor is below the camera, the ceiling above it."""
    seen = set()
    for index in range(8):
        out = render("synthetic-indoor", 0, "val", index, (48, 48))
        label, normal, depth = out["label"], out["normal"], out["depth"][..., 0]
        valid = depth > 0
        rows = np.arange(48)[:, None].repeat(48, axis=1)
        for name, test in (("floor", lambda n: n[:, 1] > 0.75),
                           ("ceiling", lambda n: n[:, 1] < -0.75),
                           ("wall", lambda n: np.abs(n[:, 1]) < 0.65)):
            mask = (label == INDOOR_CLASSES.index(name)) & valid
            if mask.any():
                seen.add(name)
                assert test(normal[mask]).mean() > 0.99, (index, name)
        floor = label == INDOOR_CLASSES.index("floor")
        ceiling = label == INDOOR_CLASSES.index("ceiling")
        if floor.any() and ceiling.any():
            assert rows[floor].mean() > rows[ceiling].mean()
    assert seen == {"floor", "ceiling", "wall"}


def test_street_values_and_sky():
    sky = STREET_CLASSES.index("sky")
    for index in range(6):
        out = render("synthetic-street", 0, "train", index, SIZE)
        image, label, depth = out["image"], out["label_7"], out["depth"]
        assert image.dtype == np.float32 and 0.0 <= image.min() and image.max() <= 1.0
        assert set(np.unique(label)) <= set(range(-1, len(STREET_CLASSES)))
        assert depth.shape == (*SIZE, 1) and depth.min() >= 0.0
        assert np.all(depth[label == sky] == 0)  # sky has no depth
        road = label == STREET_CLASSES.index("road")
        assert road.any() and (depth[road] > 0).mean() > 0.5
        assert depth.max() < 1.0  # inverse depth in 1/m: everything is over a metre away
        rows = np.arange(SIZE[0])[:, None].repeat(SIZE[1], axis=1)
        assert rows[label == sky].mean() < rows[road].mean()


def context_images(count=8, size=SIZE):
    return [render("synthetic-context", 0, "train", index, size) for index in range(count)]


def test_context_values():
    person = CONTEXT_CLASSES.index("person")
    for out in context_images():
        image, label, parts = out["image"], out["label"], out["human_parts"]
        assert image.dtype == np.float32 and image.shape == (*SIZE, 3)
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert label.shape == SIZE and set(np.unique(label)) <= set(range(len(CONTEXT_CLASSES)))
        assert set(np.unique(parts)) <= set(range(-1, len(CONTEXT_PARTS)))
        for name in ("saliency", "edge"):
            assert out[name].dtype == np.float32 and out[name].shape == SIZE
            assert set(np.unique(out[name])) <= {0.0, 1.0}
        norms = np.linalg.norm(out["normal"], axis=-1)
        sky = label == CONTEXT_CLASSES.index("sky")
        assert np.allclose(norms[~sky], 1.0, atol=1e-4) and np.all(norms[sky] == 0)
        assert np.array_equal(parts >= 0, label == person)  # parts on people, ignored elsewhere


def test_context_parts_edges_and_saliency_follow_the_scene():
    outs = context_images(16, (48, 48))
    stuff = [CONTEXT_CLASSES.index(name) for name in ("ground", "wall", "sky")]
    with_people = [out for out in outs if (out["human_parts"] >= 0).any()]
    assert len(with_people) >= 8  # most scenes have people, as PASCAL-Context's parts need
    assert {int(v) for out in with_people for v in np.unique(out["human_parts"])} == {
        -1, *range(len(CONTEXT_PARTS))}
    head, leg = CONTEXT_PARTS.index("head"), CONTEXT_PARTS.index("lower leg")
    rows = np.arange(48)[:, None].repeat(48, axis=1)
    for out in with_people:
        parts = out["human_parts"]
        if (parts == head).any() and (parts == leg).any():
            assert rows[parts == head].mean() < rows[parts == leg].mean()  # heads above feet
    for out in outs:
        label = out["label"]
        expected = np.zeros(label.shape, dtype=bool)  # a pixel whose right or lower neighbour
        expected[:, :-1] |= label[:, :-1] != label[:, 1:]  # has another class
        expected[:-1] |= label[:-1] != label[1:]
        assert np.array_equal(out["edge"] == 1, expected)
        salient = out["saliency"] == 1
        assert not np.isin(label[salient], stuff).any()  # only objects are salient
    assert sum((out["saliency"] == 1).any() for out in outs) >= 12


def test_context_is_deterministic_by_seed():
    first = render("synthetic-context", 3, "val", 5, SIZE)
    again = render("synthetic-context", 3, "val", 5, SIZE)
    other = render("synthetic-context", 4, "val", 5, SIZE)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["image"], other["image"])


def test_context_reads_as_five_tasks(sets):
    ds = MTLDataset(sets["synthetic-context"], "train")
    assert {name: (spec.kind, spec.channels) for name, spec in ds.tasks.items()} == {
        "segmentation": ("segmentation", len(CONTEXT_CLASSES)),
        "parts": ("parts", len(CONTEXT_PARTS)), "saliency": ("saliency", 1),
        "edges": ("edges", 1), "normal": ("normal", 3)}
    batch = ds.batch(ds.ids)
    assert batch["parts"].dtype == batch["segmentation"].dtype == torch.long
    assert batch["saliency"].shape == batch["edges"].shape == (3, *SIZE)
    assert batch["normal"].shape == (3, 3, *SIZE)
    for name, spec in ds.tasks.items():
        acc = spec.accumulator()
        acc.update(torch.zeros(3, spec.channels, *SIZE), batch[name])
        assert list(acc.compute()) == list(spec.metrics)


def cue_correlations(name: str, count: int = 16) -> dict[str, float]:
    """Correlation over pixels of each task's target with the image's luminance (the contested
    cue, blurred by the unseen light) and with its two colour-opponent channels (the own cues)."""
    outs = [render(name, 0, "train", index, (32, 32)) for index in range(count)]
    image = np.concatenate([out["image"].reshape(-1, 3) for out in outs])
    cues = {"tone": image.mean(1), "red-green": image[:, 0] - image[:, 1],
            "blue-yellow": image[:, 2] - image[:, :2].mean(1)}
    return {f"{task}~{cue}": float(np.corrcoef(np.concatenate([out[task].ravel() for out in outs]),
                                               cue_values)[0, 1])
            for task in ("brightness", "darkness") for cue, cue_values in cues.items()}


def test_conflict_levels_share_images_and_differ_in_targets():
    assert set(CONFLICT_LEVELS) <= set(BENCHMARKS)
    low, high = (render(name, 2, "val", 4, SIZE) for name in CONFLICT_LEVELS)
    assert np.array_equal(low["image"], high["image"])
    assert not np.array_equal(low["darkness"], high["darkness"])
    for out in (low, high):
        assert out["image"].dtype == np.float32 and 0.0 <= out["image"].min() <= out["image"].max() <= 1.0
        for task in ("brightness", "darkness"):  # every pixel valid
            assert out[task].shape == (*SIZE, 1) and 0.5 <= out[task].min() <= out[task].max() <= 2.5


def test_conflict_tasks_read_the_tone_in_opposite_ways_only_at_the_high_level():
    low, high = (cue_correlations(name) for name in ("synthetic-conflict-low", "synthetic-conflict-high"))
    assert high["brightness~tone"] > 0.6 and high["darkness~tone"] < -0.6  # one cue, opposite outputs
    assert abs(high["brightness~red-green"]) < 0.2 and abs(high["darkness~blue-yellow"]) < 0.2
    assert abs(low["brightness~tone"]) < 0.2 and abs(low["darkness~tone"]) < 0.2
    assert low["brightness~red-green"] > 0.8 and abs(low["brightness~blue-yellow"]) < 0.2  # own cues
    assert low["darkness~blue-yellow"] > 0.8 and abs(low["darkness~red-green"]) < 0.2


def test_conflict_reads_as_two_regressions(sets):
    ds = MTLDataset(sets["synthetic-conflict-high"], "train")
    assert {name: (spec.kind, spec.channels) for name, spec in ds.tasks.items()} == {
        "brightness": ("depth", 1), "darkness": ("depth", 1)}
    meta = json.loads((sets["synthetic-conflict-high"] / "meta.json").read_text())
    assert meta["conflict"] == CONFLICT_LEVELS["synthetic-conflict-high"]


def test_same_seed_same_bytes_and_worker_count_does_not_matter(sets, tmp_path):
    again = generate("synthetic-indoor", tmp_path / "again", workers=2, **TINY)
    assert digest(again) == digest(sets["synthetic-indoor"])


def test_different_seed_different_bytes(sets, tmp_path):
    other = digest(generate("synthetic-street", tmp_path / "s1", seed=1, workers=1, **TINY))
    base = digest(sets["synthetic-street"])
    assert other.keys() == base.keys()
    changed = [k for k in base if k.endswith(".npy") and base[k] != other[k]]
    assert len(changed) == len(base) - 1  # every array; meta.json differs only by the seed


def test_get_benchmark_caches(tmp_path, monkeypatch):
    root = get_benchmark("synthetic-street", cache_dir=tmp_path, **TINY)
    assert root.parent == tmp_path and (root / "meta.json").is_file()
    assert "synthetic-street" in root.name and f"v{synthetic.GENERATOR_VERSION}" in root.name

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a cached benchmark")

    monkeypatch.setattr(synthetic, "generate", fail)
    assert get_benchmark("synthetic-street", cache_dir=tmp_path, **TINY) == root
    monkeypatch.setenv("MTU_CACHE_DIR", str(tmp_path))
    assert get_benchmark("synthetic-street", **TINY) == root


def test_get_benchmark_is_atomic(tmp_path, monkeypatch):
    real = synthetic.generate

    def crash(name, root, **kwargs):
        real(name, root, workers=1, **kwargs)
        (Path(root) / "meta.json").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", crash)
    with pytest.raises(KeyboardInterrupt):
        get_benchmark("synthetic-indoor", cache_dir=tmp_path, **TINY)
    assert list(tmp_path.iterdir()) == []  # neither the final folder nor the temporary one

    monkeypatch.setattr(synthetic, "generate", real)
    root = get_benchmark("synthetic-indoor", cache_dir=tmp_path, **TINY)
    (root / "meta.json").unlink()  # a folder without meta.json is incomplete: regenerate it
    assert (get_benchmark("synthetic-indoor", cache_dir=tmp_path, **TINY) / "meta.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [root.name]


@pytest.mark.parametrize("arguments, message", [
    ({"n_train": 10**12}, r"n_train=1000000000000 is not accepted; give an integer from 1 to 100000"),
    ({"n_val": 0}, r"n_val=0 is not accepted"),
    ({"n_train": -3}, r"n_train=-3 is not accepted"),
    ({"size": (100_000, 100_000)}, r"size=\[100000, 100000\] is not accepted; give \[height, "
                                   r"width\] with each from 8 to 2048"),
    ({"n_train": 100_000, "n_val": 100_000, "size": (2048, 2048)},
     r"would write about .* TB to .*; choose fewer or smaller images"),
])
def test_absurd_sizes_are_refused_before_anything_is_written(tmp_path, arguments, message):
    with pytest.raises(DatasetError, match=message):
        generate("synthetic-indoor", tmp_path / "out", **{**TINY, **arguments})
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown benchmark 'nyuv2'.*synthetic-indoor"):
        generate("nyuv2", tmp_path / "x")
    with pytest.raises(ValueError, match="synthetic-street"):
        get_benchmark("nyuv2", cache_dir=tmp_path)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "note.txt").write_text("mine")
    with pytest.raises(DatasetError, match=r"full is not empty \(it holds note\.txt\)"):
        generate("synthetic-indoor", tmp_path / "full", **TINY)
    (tmp_path / "file").write_text("mine")
    with pytest.raises(DatasetError, match=r"file exists and is not a folder"):
        generate("synthetic-indoor", tmp_path / "file", **TINY)
    with pytest.raises(ValueError, match="size"):
        generate("synthetic-indoor", tmp_path / "y", n_train=1, n_val=1, size=(4, 64))
    with pytest.raises(ValueError, match="unknown split 'test'; expected one of train, val"):
        render("synthetic-indoor", 0, "test", 0)


def test_command_line(tmp_path, capsys):
    synthetic.main(["synthetic-street", str(tmp_path / "cli"), "--n-train", "2", "--n-val", "1",
                    "--size", "16x24", "--workers", "1"])
    assert "wrote synthetic-street" in capsys.readouterr().out
    assert MTLDataset(tmp_path / "cli", "train").image_size == (16, 24)
