"""MTLDataset on tiny hand-written layouts (NYUv2 and Cityscapes folders) and a generated one."""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from core.data import DatasetError, MTLDataset, generate, split_calibration_test
from core.data.npy import CITYSCAPES_CLASSES, NYUV2_CLASSES

H, W = 4, 5


def write_split(root: Path, split: str = "train", ids=(0, 2, 10), folders=None, depth_hw1=True):
    """Write ROOT/split/{folder}/{id}.npy for the given folders (default: NYUv2's)."""
    folders = folders or ("image", "label", "depth", "normal")
    rng = np.random.default_rng(0)
    for i in ids:
        arrays = {
            "image": rng.random((H, W, 3)).astype(np.float32),
            "label": rng.integers(-1, 13, (H, W)).astype(np.float32),
            "label_7": rng.integers(-1, 7, (H, W)).astype(np.float32),
            "label_19": rng.integers(-1, 19, (H, W)).astype(np.float32),
            "depth": rng.random((H, W, 1) if depth_hw1 else (H, W)).astype(np.float32),
            "normal": np.tile(np.float32([0.0, 0.0, 1.0]), (H, W, 1)),
            "class": np.int64(i % 3),
        }
        for folder in folders:
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            np.save(root / split / folder / f"{i}.npy", arrays[folder])
    return root


@pytest.fixture
def nyu(tmp_path):
    write_split(tmp_path, "train")
    return write_split(tmp_path, "val", ids=(1, 3))


def test_nyuv2_layout_ids_tasks_and_items(nyu):
    ds = MTLDataset(nyu, "train")
    assert ds.ids == [0, 2, 10]
    assert len(ds) == 3 and ds.split == "train" and ds.root == nyu
    assert list(ds.tasks) == ["segmentation", "depth", "normal"]
    seg = ds.tasks["segmentation"]
    assert (seg.kind, seg.channels, seg.class_names) == ("segmentation", 13, NYUV2_CLASSES)
    assert (ds.tasks["depth"].channels, ds.tasks["normal"].channels) == (1, 3)
    assert ds.image_size == (H, W)

    item = ds[2]
    assert item["id"] == 10
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert item["segmentation"].shape == (H, W) and item["segmentation"].dtype == torch.long
    assert item["depth"].shape == (1, H, W) and item["depth"].dtype == torch.float32
    assert item["normal"].shape == (3, H, W) and item["normal"].dtype == torch.float32
    raw = np.load(nyu / "train" / "label" / "10.npy")
    assert torch.equal(item["segmentation"], torch.from_numpy(raw.astype(np.int64)))
    image = np.load(nyu / "train/image/10.npy").transpose(2, 0, 1)
    assert np.allclose(item["image"].numpy(), image)
    assert ds[-1]["id"] == 10
    with pytest.raises(IndexError):
        ds[3]
    assert MTLDataset(nyu, "val").ids == [1, 3]


def test_size_resizes_images_and_every_target(nyu):
    raw = MTLDataset(nyu, "train")[1]
    ds = MTLDataset(nyu, "train", size=(2 * H, 2 * W))
    item = ds[1]
    assert ds.image_size == (2 * H, 2 * W) and item["image"].shape == (3, 2 * H, 2 * W)

    def doubled(t):
        return t.repeat_interleave(2, -2).repeat_interleave(2, -1)

    for task in ("segmentation", "depth", "normal"):  # nearest neighbour: labels stay exact
        assert item[task].dtype == raw[task].dtype and torch.equal(item[task], doubled(raw[task]))
    with pytest.raises(DatasetError, match=r"size must be \(H, W\).*\(0, 3\)"):
        MTLDataset(nyu, "train", size=(0, 3))


def test_pascal_context_folders_are_found_by_their_kinds(tmp_path):
    write_split(tmp_path, folders=("image", "label"))
    rng = np.random.default_rng(1)
    for i in (0, 2, 10):
        for folder in ("saliency", "edge"):
            (tmp_path / "train" / folder).mkdir(exist_ok=True)
            np.save(tmp_path / "train" / folder / f"{i}.npy",
                    (rng.random((H, W)) > 0.5).astype(np.uint8) * 255)
    ds = MTLDataset(tmp_path, "train")
    assert [(n, s.kind) for n, s in ds.tasks.items()] == [
        ("segmentation", "segmentation"), ("saliency", "saliency"), ("edges", "edges")]
    assert set(ds[0]["saliency"].unique().tolist()) <= {0.0, 1.0}
    (tmp_path / "train" / "human_parts").mkdir()
    with pytest.raises(DatasetError, match=r"human_parts needs .*meta\.json .*\"parts\""):
        MTLDataset(tmp_path, "train", tasks=["parts"])


def test_cityscapes_layout_and_flat_depth(tmp_path):
    write_split(tmp_path, folders=("image", "label_7", "depth"), depth_hw1=False)
    ds = MTLDataset(tmp_path, "train")
    assert list(ds.tasks) == ["segmentation", "depth"]
    assert ds.tasks["segmentation"].channels == 7
    assert ds.tasks["segmentation"].class_names == CITYSCAPES_CLASSES[7]
    assert ds[0]["depth"].shape == (1, H, W)


def test_several_label_folders_become_several_tasks(tmp_path):
    write_split(tmp_path, folders=("image", "label_7", "label_19", "depth"))
    ds = MTLDataset(tmp_path, "train")
    assert list(ds.tasks) == ["segmentation_19", "segmentation_7", "depth"]
    assert ds.tasks["segmentation_19"].channels == 19


def test_task_selection(nyu):
    assert list(MTLDataset(nyu, "train", tasks=["normal", "segmentation"]).tasks) == [
        "segmentation", "normal"]
    ds = MTLDataset(nyu, "train", tasks="depth")
    assert list(ds.tasks) == ["depth"] and set(ds[0]) == {"id", "image", "depth"}
    with pytest.raises(DatasetError, match=r"unknown tasks \['albedo'\].*segmentation.*normal"):
        MTLDataset(nyu, "train", tasks=["albedo"])


def test_batch_and_subset(nyu):
    ds = MTLDataset(nyu, "train")
    batch = ds.batch([10, 0])
    assert batch["id"].tolist() == [10, 0] and batch["id"].dtype == torch.long
    assert batch["image"].shape == (2, 3, H, W)
    assert batch["segmentation"].shape == (2, H, W)
    assert batch["depth"].shape == (2, 1, H, W) and batch["normal"].shape == (2, 3, H, W)
    assert torch.equal(batch["image"][0], ds[2]["image"])
    assert ds.batch(torch.tensor([2]))["id"].tolist() == [2]
    assert ds.index_of(10) == 2 and ds.index_of(np.int64(2)) == 1

    sub = ds.subset([10, 2])
    assert len(sub) == 2 and sub.ids == [10, 2] and [sub[i]["id"] for i in range(2)] == [10, 2]
    assert sub.tasks == ds.tasks and sub.index_of(2) == 1
    assert sub.batch([2])["id"].tolist() == [2]
    assert sub.subset([2]).ids == [2]
    loader = torch.utils.data.DataLoader(sub, batch_size=2)
    assert next(iter(loader))["id"].tolist() == [10, 2]
    with pytest.raises(DatasetError, match="instance id 0 is not in this subset"):
        sub.batch([0])
    with pytest.raises(DatasetError, match=r"repeated: \[2\]"):
        ds.subset([2, 2])


def test_unknown_id(nyu):
    ds = MTLDataset(nyu, "train")
    with pytest.raises(DatasetError, match=r"unknown instance id 5 .*\[0, 2, 10\]"):
        ds.index_of(5)
    with pytest.raises(DatasetError, match="unknown instance id 7"):
        ds.batch([0, 7])
    with pytest.raises(DatasetError, match="unknown instance id"):
        ds.subset([3])


def test_classification_needs_meta(tmp_path):
    write_split(tmp_path, folders=("image", "class"))
    with pytest.raises(DatasetError, match=r"class needs .*meta\.json"):
        MTLDataset(tmp_path, "train")
    meta = {"benchmark": "toy", "tasks": {"classification": {
        "folder": "class", "kind": "classification", "channels": 3,
        "class_names": ["a", "b", "c"]}}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    ds = MTLDataset(tmp_path, "train")
    assert ds.tasks["classification"].class_names == ("a", "b", "c")
    assert ds[2]["classification"].dtype == torch.long and ds[2]["classification"].shape == ()
    assert ds.batch([0, 10])["classification"].tolist() == [0, 1]


def test_uint8_images_are_scaled(tmp_path):
    write_split(tmp_path, ids=(0,), folders=("image", "depth"))
    np.save(tmp_path / "train/image/0.npy", np.full((H, W, 3), 255, np.uint8))
    assert MTLDataset(tmp_path, "train")[0]["image"].max() == 1.0


def test_cache_serves_items_once_read(nyu):
    ds = MTLDataset(nyu, "train", cache=True)
    lazy = MTLDataset(nyu, "train", cache=False)
    first = ds[1]
    (nyu / "train/image/2.npy").unlink()
    assert torch.equal(ds[1]["image"], first["image"])
    with pytest.raises(DatasetError, match=r"cannot read .*image/2\.npy"):
        lazy[1]


def _remove(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()


@pytest.mark.parametrize("damage, match", [
    (lambda r: _remove(r), "dataset root .* does not exist"),
    (lambda r: _remove(r / "train"), r"no split folder .*train; splits found in .*\['val'\]"),
    (lambda r: _remove(r / "train/image"), "no image folder .*train/image"),
    (lambda r: [_remove(r / "train" / f) for f in ("label", "depth", "normal")],
     "no task folder in .*train; expected one or more of label, label_N, human_parts, saliency, "
     "edge, depth, normal, class"),
    (lambda r: [p.unlink() for p in (r / "train/image").iterdir()], "split 'train' is empty"),
    (lambda r: (r / "train/depth/2.npy").unlink(),
     r"train/depth does not match .*train/image: missing ids \[2\]"),
    (lambda r: np.save(r / "train/normal/11.npy", np.zeros((H, W, 3))),
     r"ids without an image \[11\]"),
    (lambda r: np.save(r / "train/label/0.npy", np.zeros((H + 1, W))),
     r"label/0\.npy has shape \(5, 5\) but its image is 4x5; expected \(4, 5\)"),
    (lambda r: np.save(r / "train/normal/0.npy", np.zeros((H, W))),
     r"normal/0\.npy has shape \(4, 5\) .* expected \(4, 5, 3\)"),
    (lambda r: np.save(r / "train/image/0.npy", np.zeros((3, H, W))),
     r"image/0\.npy has shape \(3, 4, 5\); expected an image \(H, W, 3\)"),
    (lambda r: (r / "train/depth/0.npy").write_bytes(b"not an array"),
     r"cannot read .*depth/0\.npy"),
    (lambda r: np.save(r / "train/label/0.npy", np.full((H, W), 13.0)),
     r"holds class ids 13\.\.13; task 'segmentation' expects 0\.\.12, or -1"),
    (lambda r: np.save(r / "train/image/x1.npy", np.zeros((H, W, 3))), "x1.npy is not named by"),
    (lambda r: (r / "meta.json").write_text("{oops"), r"cannot read .*meta\.json"),
    (lambda r: (r / "meta.json").write_text('{"tasks": {"depth": {"folder": "depth"}}}'),
     r"task 'depth' must give \"folder\", \"kind\" and \"channels\""),
    (lambda r: (r / "meta.json").write_text(
        '{"tasks": {"depth": {"folder": "depth", "kind": "depth", "channels": 2}}}'),
     r"meta\.json task 'depth': .*channels"),
    (lambda r: (r / "meta.json").write_text(
        '{"tasks": {"depth": {"folder": "disparity", "kind": "depth", "channels": 1}}}'),
     r"task 'depth' has no folder .*train/disparity"),
])
def test_dataset_errors(nyu, damage, match):
    damage(nyu)
    with pytest.raises(DatasetError, match=match):
        MTLDataset(nyu, "train")


def test_shapes_are_checked_per_item(nyu):
    np.save(nyu / "train/depth/10.npy", np.zeros((H, W + 2, 1)))
    ds = MTLDataset(nyu, "train")  # only the first item is checked up front
    ds[1]
    with pytest.raises(DatasetError, match=r"depth/10\.npy has shape \(4, 7, 1\)"):
        ds[2]


class _Trap:
    """Unpickling this object would create a file."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_pickled_files_are_refused_not_unpickled(nyu, tmp_path):
    sentinel = tmp_path / "unpickled"
    np.save(nyu / "train/label/0.npy", np.array([_Trap(sentinel)], dtype=object),
            allow_pickle=True)
    with pytest.raises(DatasetError, match=r"cannot read .*label/0\.npy.*pickle"):
        MTLDataset(nyu, "train")
    assert not sentinel.exists()


def test_generated_benchmark_loads(tmp_path):
    root = generate("synthetic-street", tmp_path / "street", n_train=3, n_val=2, size=(16, 24),
                    workers=1)
    ds = MTLDataset(root, "val")
    assert ds.ids == [0, 1] and list(ds.tasks) == ["segmentation", "depth"]
    assert ds.tasks["segmentation"].class_names[0] == "road"
    assert ds.meta["benchmark"] == "synthetic-street"
    assert ds.batch(ds.ids)["segmentation"].shape == (2, 16, 24)


def test_split_calibration_test():
    ids = list(range(0, 1200, 2))
    calibration, test = split_calibration_test(ids)
    assert len(calibration) == 120 and len(test) == 480
    assert sorted(calibration + test) == ids and not set(calibration) & set(test)
    assert calibration[:3] == [0, 10, 20]
    shuffled = ids[:]
    random.Random(0).shuffle(shuffled)
    assert split_calibration_test(shuffled) == (calibration, test)
    assert split_calibration_test([7, 3]) == ([3], [7])
    with pytest.raises(DatasetError, match="distinct"):
        split_calibration_test([1, 1, 2])


def test_a_header_claiming_a_huge_array_is_refused_before_reading(nyu):
    path = nyu / "train" / "depth" / "2.npy"
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (10**6, 10**6)})
    dataset = MTLDataset(nyu, "train")
    with pytest.raises(DatasetError, match="claims 1e\\+12 elements"):
        dataset.batch([2])


def test_images_of_different_sizes_are_named(nyu):
    np.save(nyu / "train" / "image" / "2.npy", np.zeros((H + 2, W, 3), np.float32))
    for folder, shape in (("label", (H + 2, W)), ("depth", (H + 2, W, 1)), ("normal", (H + 2, W, 3))):
        np.save(nyu / "train" / folder / "2.npy", np.ones(shape, np.float32))
    with pytest.raises(DatasetError, match="have different sizes .*MTLDataset\\(size="):
        MTLDataset(nyu, "train").batch([0, 2])
    assert MTLDataset(nyu, "train", size=(H, W)).batch([0, 2])["image"].shape == (2, 3, H, W)


def test_fractional_class_ids_are_refused_not_truncated(nyu):
    labels = np.zeros((H, W), np.float32)
    labels[0, 0] = 2.5
    np.save(nyu / "train" / "label" / "2.npy", labels)
    with pytest.raises(DatasetError, match="fractional class ids such as 2.5"):
        MTLDataset(nyu, "train").batch([2])


@pytest.mark.parametrize("field, value, match", [("n_train", 10**7, "n_train=10000000 is not accepted"),
                                                 ("n_val", -1, "n_val=-1"), ("size", (64, 10**5), "size=")])
def test_a_data_source_cannot_ask_for_a_huge_synthetic_set(field, value, match):
    from core.data.sources import DataSource

    with pytest.raises(DatasetError, match=match):
        DataSource(benchmark="synthetic-indoor", **{field: value})


def _meta_with(**segmentation) -> str:
    entry = {"folder": "label", "kind": "segmentation", "channels": 13, **segmentation}
    return json.dumps({"tasks": {"segmentation": entry,
                                 "depth": {"folder": "depth", "kind": "depth", "channels": 1}}})


@pytest.mark.parametrize("meta, match", [
    (_meta_with(channels=2**40), r"meta\.json task 'segmentation': .*claims 1099511627776 channels; "
                                 r"a task has at most 65,536"),
    (_meta_with(channels=10**30), r"claims 1000000000000000000000000000000 channels"),
    (_meta_with(channels="13"), r"task 'segmentation'.*channels"),
    ('{"tasks": {"segmentation": {"folder": "label", "kind": "segmentation", "channels": '
     + "9" * 5000 + "}}}", r"cannot read .*meta\.json: .*5000 digits.*; expected a JSON object"),
    ("[" * 100_000 + "]" * 100_000, r"meta\.json is nested deeper than .*\(about \d+ levels\)"),
    (_meta_with(folder="../label"), r"meta\.json task 'segmentation' has folder '\.\./label'; "
                                    r"expected the name of a folder in each split"),
    (_meta_with(folder="a/b"), r"folder 'a/b'"),
    (json.dumps({"tasks": {"../x": {"folder": "depth", "kind": "depth", "channels": 1}}}),
     r"task name '\.\./x' is not accepted; .*\[A-Za-z0-9_\]"),
    (json.dumps({"tasks": {"a/b": {"folder": "depth", "kind": "depth", "channels": 1}}}),
     r"task name 'a/b'"),
    (b"\xff\xfe{}", r"cannot read .*meta\.json: 'utf-8' codec"),
])
def test_meta_json_is_checked_when_the_dataset_is_opened(nyu, meta, match):
    path = nyu / "meta.json"
    path.write_bytes(meta) if isinstance(meta, bytes) else path.write_text(meta)
    with pytest.raises(DatasetError, match=match):
        MTLDataset(nyu, "train")


def _opened_within(root: Path, fifo: Path, timeout: float = 60.0):
    """Open the dataset in a thread; assert that it returned, and give what it raised. A thread
    still blocked on the FIFO is released by opening the FIFO's other end."""
    outcome = {}

    def run():
        try:
            outcome["dataset"] = MTLDataset(root, "train")
        except Exception as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    assert not thread.is_alive(), f"opening {root} blocked on {fifo}"
    return outcome.get("error")


@pytest.mark.parametrize("where", ["train/image/0.npy", "train/depth/10.npy", "meta.json"])
def test_a_fifo_in_the_dataset_is_refused_without_blocking(nyu, where):
    path = nyu / where
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    error = _opened_within(nyu, path)
    assert isinstance(error, DatasetError), error
    assert str(path) in str(error) and "not a regular file" in str(error), error


def test_a_folder_named_like_an_instance_file_is_refused(nyu):
    (nyu / "train/depth/2.npy").unlink()
    (nyu / "train/depth/2.npy").mkdir()
    with pytest.raises(DatasetError, match=r"depth/2\.npy is not a regular file"):
        MTLDataset(nyu, "train")
