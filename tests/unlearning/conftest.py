import pytest
import torch

from core.data import split_val
from core.models import MultiTaskModel, build_model
from core.requests import ForgetRequest
from core.unlearning import UnlearningData


@pytest.fixture()
def street_data(data_cache, monkeypatch) -> UnlearningData:
    """Tiny 2-task data (segmentation + depth) with a one-epoch training recipe."""
    from core.data.sources import DataSource
    from tests.conftest import TINY

    monkeypatch.setenv("MTU_CACHE_DIR", str(data_cache))
    source = DataSource(benchmark="synthetic-street", **TINY)
    val = source.open("val")
    return UnlearningData(train=source.open("train"), val=val,
                          calibration_ids=split_val(val.ids)["calibration"],
                          architecture={"name": "small_cnn", "args": {"width": 4}},
                          training={"epochs": 1, "batch_size": 4, "lr": 1e-3, "seed": 0})


@pytest.fixture()
def street_model(street_data) -> MultiTaskModel:
    torch.manual_seed(0)
    return build_model(street_data.architecture, list(street_data.train.tasks.values())).eval()


@pytest.fixture(params=["full", "partial"])
def request_mode(request, street_data) -> ForgetRequest:
    ids = street_data.train.ids
    tasks = None if request.param == "full" else ["depth"]
    return ForgetRequest.build(ids[:3], tasks, ids, list(street_data.train.tasks))

