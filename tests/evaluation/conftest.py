"""A forget request on the tiny indoor data, shared by the evaluation tests."""

import pytest

from core.requests import ForgetRequest


@pytest.fixture()
def indoor_request(indoor_data):
    """indoor_request(n, partial): forget the first n training instances, on every task or
    (partial) on the first task only."""
    train = indoor_data.train
    names = list(train.tasks)

    def build(n: int, partial: bool) -> ForgetRequest:
        return ForgetRequest.build(train.ids[:n], names[:1] if partial else None, train.ids, names)

    return build
