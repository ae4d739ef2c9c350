"""The three-way split is enforced: a method's data cannot reach a tuning or test instance."""

import pytest

from core.data import HeldOutError, split_val
from core.unlearning import UnlearningData, get_unlearner
from core.unlearning.base import REGISTRY, Unlearner


class _Peek(Unlearner):
    """A method that tries to read one val instance (`ctx.data.val.batch`) or a held-out part."""

    name = "peek"
    target: int | str = 0

    def unlearn(self, ctx, report):
        if isinstance(self.target, str):
            ctx.data.held_out(self.target)
        else:
            ctx.data.val.batch([self.target])
        return {"read": self.target}


@pytest.fixture()
def peek(monkeypatch):
    monkeypatch.setitem(REGISTRY, "peek", _Peek)

    def run(target, model, request, data):
        monkeypatch.setattr(_Peek, "target", target)
        return get_unlearner("peek", {"steps": 1, "device": "cpu"}).run(model, request, data)

    return run


def test_a_method_reading_a_test_or_tuning_instance_raises(peek, street_model, street_data,
                                                           request_mode):
    parts = split_val(street_data.held_out("test")[0].ids)
    calibration = street_data.calibration_ids[0]
    assert peek(calibration, street_model, request_mode, street_data).extras == {"read": calibration}
    for part in ("test", "tuning"):
        with pytest.raises(HeldOutError, match=f"instance {parts[part][0]} .*calibration part"):
            peek(parts[part][0], street_model, request_mode, street_data)
        with pytest.raises(HeldOutError, match=f"the {part} part cannot be read"):
            peek(part, street_model, request_mode, street_data)


def test_the_calibration_view_refuses_every_other_id(street_data):
    view = street_data.for_method().val
    test_id = street_data.held_out("test")[1][0]
    assert view.ids == street_data.calibration_ids and len(view) == len(view.ids)
    assert view[0]["id"] == view.ids[0] and view.tasks == street_data.train.tasks
    assert view.image_size == street_data.train.image_size
    for read in (view.batch, view.subset):
        with pytest.raises(HeldOutError, match=f"instance {test_id} "):
            read([view.ids[0], test_id])
    with pytest.raises(HeldOutError, match=f"instance {test_id} "):
        view.index_of(test_id)
    with pytest.raises(IndexError):
        view[len(view)]
    with pytest.raises(AttributeError):
        view._load  # noqa: B018  (the loader is not passed on)


def test_the_full_data_gives_the_held_out_parts_and_checks_calibration_ids(street_data):
    val, test = street_data.held_out("test")
    parts = split_val(val.ids)
    assert test == parts["test"] and street_data.held_out("tuning")[1] == parts["tuning"]
    assert street_data.held_out("calibration")[1] == street_data.calibration_ids == parts["calibration"]
    assert set(parts["calibration"]).isdisjoint(parts["tuning"] + parts["test"])
    with pytest.raises(ValueError, match="'train'.*calibration, tuning, test"):
        street_data.held_out("train")
    with pytest.raises(HeldOutError, match=f"calibration ids {parts['test'][0]} are in the tuning or test"):
        UnlearningData(train=street_data.train, val=val, calibration_ids=[parts["test"][0]])
