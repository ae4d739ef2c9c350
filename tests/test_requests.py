import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.requests import ForgetRequest, RequestError, parse_ids

TRAIN = list(range(10))
TASKS = ("segmentation", "depth", "normal")


def test_full_task_request_forgets_every_task():
    request = ForgetRequest.build([3, 1], None, TRAIN, TASKS)
    assert request.mode == "full"
    assert request.instances == (1, 3)
    assert request.forget_pairs == {t: frozenset({1, 3}) for t in TASKS}
    assert request.kept_pairs == {}
    assert request.retain_pairs["depth"] == frozenset({0, 2, 4, 5, 6, 7, 8, 9})
    assert ForgetRequest.build([1], list(TASKS), TRAIN, TASKS).mode == "full"


def test_partial_request_keeps_the_other_tasks_of_the_same_images():
    request = ForgetRequest.build([4], ["depth"], TRAIN, TASKS)
    assert request.mode == "partial"
    assert request.forget_pairs == {"depth": frozenset({4})}
    assert request.kept_pairs == {"segmentation": frozenset({4}), "normal": frozenset({4})}
    assert request.kept_tasks == ("segmentation", "normal")
    assert 4 not in request.retain_ids
    assert request.to_dict() == {"instances": [4], "tasks": ["depth"], "mode": "partial"}


@pytest.mark.parametrize("instances, tasks, message", [
    ([], None, "names no instance"),
    ([1, 1, 2], None, "duplicate instance ids 1"),
    ([3, 42], None, "unknown instance ids 42.*from 0 to 9"),
    (["a"], None, "must be integers"),
    ([1], ["colour"], "unknown tasks colour; accepted: segmentation, depth, normal"),
    ([1], [], "names no task"),
    ([1], ["depth", "depth"], "duplicate tasks depth"),
    (TRAIN, None, "forgets all 10 training instances"),
])
def test_bad_requests_name_the_bad_value(instances, tasks, message):
    with pytest.raises(RequestError, match=message):
        ForgetRequest.build(instances, tasks, TRAIN, TASKS)


def test_parse_ids_reads_ids_and_ranges():
    known = range(100)
    assert parse_ids(" 3,17, 40-45 ,3 ", known) == [3, 17, 40, 41, 42, 43, 44, 45]
    assert parse_ids("", known) == [] and parse_ids(" , ", known) == []


@pytest.mark.parametrize("text, message", [
    ("3,x", r"'x' is not an id or a range; write ids and ranges separated by commas"),
    ("3-", r"'3-' is not an id or a range"),
    ("9-4", r"range '9-4' runs backwards; write the smaller id first, e.g. 4-9"),
    ("0-1000000000", r"spans more ids than the 100 training instances"),
    ("5, 120-121", r"ids 120, 121 are not in the training set; its 100 instances have ids from 0 to 99"),
])
def test_parse_ids_names_the_bad_token(text, message):
    with pytest.raises(RequestError, match=message):
        parse_ids(text, range(100))


# -- property-based: typed ids and requests never fail with anything but a RequestError ----------
_KNOWN = list(range(10, 60))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789-, x\t", max_size=40))
def test_typed_ids_parse_to_known_ids_or_a_request_error(text):
    try:
        ids = parse_ids(text, _KNOWN)
    except RequestError as error:
        assert str(error)
    else:
        assert ids == sorted(set(ids)) and set(ids) <= set(_KNOWN)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5, 70), max_size=12),
       st.one_of(st.none(), st.lists(st.sampled_from(["seg", "depth", "normal", "nope"]), max_size=4)))
def test_requests_are_valid_or_refused_by_name(instances, tasks):
    try:
        request = ForgetRequest.build(instances, tasks, _KNOWN, ["seg", "depth", "normal"])
    except RequestError as error:
        assert str(error)
    else:
        assert set(request.instances) <= set(_KNOWN) and request.instances
        assert set(request.tasks) <= {"seg", "depth", "normal"}
        assert set(request.retain_ids).isdisjoint(request.instances)


def test_a_huge_range_is_refused_before_anything_is_allocated():
    with pytest.raises(RequestError, match="spans more ids than the 50 training instances"):
        parse_ids("0-1000000000000", _KNOWN)


def _finishes(call, timeout=60.0):
    """Run `call` in a thread; assert it returned within `timeout` s (a generous bound that a
    linear check meets by far and a quadratic one on 100 k ids does not), and give its outcome."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except Exception as error:  # noqa: BLE001 - handed back to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the request check did not return"
    return outcome


@pytest.mark.parametrize("extra, message", [
    ([17, 99_998, 17], "duplicate instance ids 17, 99998; name each instance once"),
    ([100_000, 123_456], r"unknown instance ids 100000, 123456; the training set has 100000 "
                         "instances with ids from 0 to 99999"),
])
def test_a_request_against_100k_ids_is_refused_by_name(extra, message):
    train = list(range(100_000))
    instances = list(range(1, 99_999, 1)) + extra
    outcome = _finishes(lambda: ForgetRequest.build(instances, None, train, TASKS))
    assert isinstance(outcome.get("error"), RequestError), outcome
    assert re.search(message, str(outcome["error"])), str(outcome["error"])


def test_a_request_of_100k_ids_is_built():
    train = list(range(100_001))
    outcome = _finishes(lambda: ForgetRequest.build(range(100_000, 0, -1), None, train, TASKS))
    request = outcome["value"]
    assert request.instances == tuple(range(1, 100_001)) and request.retain_ids == (0,)


def test_typed_ranges_against_100k_ids_are_read_in_linear_time():
    from core.cli import _instances

    text = ", ".join(f"{2 * i}-{2 * i + 1}" for i in range(50_000))
    outcome = _finishes(lambda: _instances(text, list(range(100_001))))
    assert outcome["value"] == list(range(100_000))
