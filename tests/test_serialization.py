"""The pickle serializer: plain arguments take the C pickler, anything else cloudpickle,
and both give payloads the released docket's workers read."""

from __future__ import annotations

import pickle
from typing import Any

import cloudpickle  # type: ignore[import-untyped]
import pytest

from docket import serialization

PICKLE = serialization.get_serializer("pickle")


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1, 2.5, "text", b"bytes", True, None), {}),
        ((), {"order": 42, "note": "ünïcode", "missing": None}),
    ],
)
def test_plain_arguments_pickle_to_the_bytes_cloudpickle_writes(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    payload = serialization.dump_call(PICKLE, args, kwargs)

    assert payload == cloudpickle.dumps((args, kwargs))
    assert serialization.load_call(PICKLE, payload) == (args, kwargs)


def test_arguments_only_cloudpickle_can_write_still_round_trip() -> None:
    offset = 10

    def local(x: int) -> int:  # not importable: pickle would refuse it
        return x + offset

    with pytest.raises((pickle.PicklingError, AttributeError)):
        pickle.dumps(local)

    payload = serialization.dump_call(PICKLE, (local, [1, 2]), {"nested": {"a": (1,)}})
    (function, values), kwargs = serialization.load_call(PICKLE, payload)

    assert function(1) == 11
    assert values == [1, 2]
    assert kwargs == {"nested": {"a": (1,)}}


def test_a_subclass_of_a_plain_type_keeps_its_class() -> None:
    class Cents(int):
        pass

    payload = serialization.dump_call(PICKLE, (Cents(5),), {})
    (value,), _ = serialization.load_call(PICKLE, payload)

    assert type(value).__name__ == "Cents"
    assert value == 5
