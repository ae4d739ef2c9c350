import pytest

from core.data import DatasetError, HeldOutError, RestrictedSplit, split_calibration_test, split_val


def test_split_val_cuts_calibration_in_two_halves():
    ids = list(range(100, 120))
    parts = split_val(reversed(ids))
    # calibration part of split_calibration_test: 100, 105, 110, 115
    assert parts == {"calibration": [100, 110], "tuning": [105, 115],
                     "test": split_calibration_test(ids)[1]}
    assert sorted(sum(parts.values(), [])) == ids


class _Set:
    ids = [1, 2, 3, 4]
    tasks = {"t": None}
    image_size = (2, 2)

    def batch(self, ids):
        return {"id": list(ids)}


def test_restricted_split_reads_only_its_ids():
    view = RestrictedSplit(_Set(), [2, 4], "calibration")
    assert view.batch([4, 2]) == {"id": [4, 2]} and view.image_size == (2, 2)
    assert view.subset([4]).ids == [4]
    with pytest.raises(HeldOutError, match="instance 3 .*calibration part.*ids are 2, 4"):
        view.batch([2, 3])
    with pytest.raises(HeldOutError, match="instance 1 "):
        view.subset([1])
    with pytest.raises(DatasetError, match="calibration ids 9 are not in the dataset"):
        RestrictedSplit(_Set(), [9])
    with pytest.raises(DatasetError, match="distinct"):
        RestrictedSplit(_Set(), [2, 2])
