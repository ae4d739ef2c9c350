"""Shared fixtures: tiny synthetic benchmarks and tiny models, generated once per test session."""

from __future__ import annotations

import sys

import pytest
import torch

from core.data.sources import DataSource
from core.models import MultiTaskModel, build_model

torch.set_num_threads(2)

TINY = {"n_train": 12, "n_val": 10, "size": (32, 32)}


@pytest.fixture(autouse=True)
def main_module():
    """Streamlit's AppTest runs a page as the module `__main__` and leaves it there; a process
    spawned later (a dashboard job, a bench or tune worker) would then run that page again as
    its own main module, and fail. Each test gets pytest's `__main__` back afterwards."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


@pytest.fixture(autouse=True)
def mtu_home(tmp_path_factory, monkeypatch):
    """Every test records into a ledger of its own, never the user's; the dashboard's jobs run
    at once in the test's process instead of in a worker."""
    home = tmp_path_factory.mktemp("mtu-home")
    monkeypatch.setenv("MTU_HOME", str(home))
    monkeypatch.setenv("MTU_QUEUE", "immediate")
    return home


@pytest.fixture()
def street_copy(tmp_path):
    """A copy of the street sample model in the test's folder (NAME without suffix), so a test
    may write beside it and check that it stays byte-identical."""
    from core.checkpoints import SAMPLE_MODELS_DIR

    for suffix in (".json", ".safetensors"):
        source = SAMPLE_MODELS_DIR / f"synthetic-street{suffix}"
        (tmp_path / f"street{suffix}").write_bytes(source.read_bytes())
    return tmp_path / "street"


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mtu-cache")


@pytest.fixture(scope="session", params=["synthetic-indoor", "synthetic-street"])
def tiny_source(request, data_cache) -> DataSource:
    source = DataSource(benchmark=request.param, **TINY)
    source.resolve(cache_dir=data_cache)
    return source


@pytest.fixture(scope="session")
def indoor_source(data_cache) -> DataSource:
    source = DataSource(benchmark="synthetic-indoor", **TINY)
    source.resolve(cache_dir=data_cache)
    return source


@pytest.fixture()
def use_cache(data_cache, monkeypatch):
    """Point the synthetic cache at the session's temporary folder."""
    monkeypatch.setenv("MTU_CACHE_DIR", str(data_cache))
    return data_cache


@pytest.fixture()
def indoor_data(indoor_source, use_cache):
    """UnlearningData over the tiny indoor benchmark (no training recipe)."""
    from core.data import split_val
    from core.unlearning import UnlearningData

    val = indoor_source.open("val")
    return UnlearningData(train=indoor_source.open("train"), val=val,
                          calibration_ids=split_val(val.ids)["calibration"])


@pytest.fixture()
def tiny_model(indoor_source, use_cache) -> MultiTaskModel:
    torch.manual_seed(0)
    tasks = list(indoor_source.open("train").tasks.values())
    return build_model({"name": "small_cnn", "args": {"width": 4}}, tasks).eval()


@pytest.fixture()
def val_reads(monkeypatch) -> list[int]:
    """The ids of every val-split instance read from disk or cache while the test runs."""
    from core.data.npy import MTLDataset

    reads: list[int] = []
    read = MTLDataset.__getitem__

    def spy(self, index):
        if self.split == "val":
            reads.append(self.ids[index])
        return read(self, index)

    monkeypatch.setattr(MTLDataset, "__getitem__", spy)
    return reads
