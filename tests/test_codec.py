"""JSON in and out of the saga log: a refused value names where it sits and what it is."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest

from statesaga import InvalidSagaData
from statesaga.codec import MAX_BYTES, MAX_DEPTH, check_id, from_json, storable_text, to_json


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"a": value}
    return value


@pytest.mark.parametrize(("value", "key", "why"), [
    ({"when": datetime.date(2026, 1, 1)}, "value['when']", "is of type date"),
    ({"amounts": [1, decimal.Decimal("2.5")]}, "value['amounts'][1]", "is of type Decimal"),
    ({(1, 2): "tuple key"}, "value", "has a key of type tuple"),
    ({"ratio": float("nan")}, "value['ratio']", "is nan"),
    ([{"ok": 1}, {"inf": float("inf")}], "value[1]['inf']", "is inf"),
    ({1, 2}, "value", "is of type set"),
    ({"name": "bad\ud800"}, "value['name']", "lone surrogate"),
    ({"bad\udfff": 1}, "value key 'bad\\udfff'", "lone surrogate"),
    ({"note": ["x", "nul\x00byte"]}, "value['note'][1]", "NUL character"),
    (_nested(5000), "value" + "['a']" * (MAX_DEPTH + 1), f"deeper than {MAX_DEPTH}"),
    (_nested(MAX_DEPTH + 1), "value" + "['a']" * (MAX_DEPTH + 1), "deeper than"),
])
def test_a_value_that_cannot_be_stored_is_refused_naming_its_key(value: Any, key: str, why: str
                                                                 ) -> None:
    with pytest.raises(InvalidSagaData) as err:
        to_json(value, "the data of saga 's1'", saga_id="s1")
    assert str(err.value).startswith(f"the data of saga 's1' cannot be stored: {key} ")
    assert why in str(err.value)
    assert key == err.value.key
    assert "s1" == err.value.saga_id


def test_a_value_as_deep_as_allowed_is_stored_and_read_back() -> None:
    value = _nested(MAX_DEPTH)
    assert value == from_json(to_json(value, "x"))


def test_a_value_larger_than_a_store_may_hold_is_refused() -> None:
    with pytest.raises(InvalidSagaData, match="bytes of JSON"):
        to_json({"blob": "x" * (MAX_BYTES + 1)}, "the result of step 'a'")


def test_a_backslash_u0000_written_as_text_is_not_a_nul() -> None:
    assert {"path": "C:\\u0000"} == from_json(to_json({"path": "C:\\u0000"}, "x"))


def test_json_values_round_trip_as_json_keeps_them() -> None:
    value = {"a": [1, 2.5, None, True, "ü"], "b": {"c": "d"}, 1: (1, 2)}
    assert {"a": [1, 2.5, None, True, "ü"], "b": {"c": "d"}, "1": [1, 2]} == from_json(
        to_json(value, "x"))
    assert from_json(None) is None
    assert "null" == to_json(None, "x")


@pytest.mark.parametrize(("text", "stored"), [
    ("plain", "plain"),
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    ("nul \x00 byte", "nul \\x00 byte"),
    (None, None),
])
def test_an_error_text_is_made_storable_never_refused(text: str | None, stored: str | None
                                                      ) -> None:
    assert stored == storable_text(text)
    if stored is not None:
        stored.encode("utf-8")


def test_a_long_error_text_is_cut_saying_how_much() -> None:
    assert storable_text("x" * 20, limit=5) == "xxxxx... (15 more characters)"


@pytest.mark.parametrize("bad", ["", None, 7, "a\x00b", "tab\there", "lone\ud800", "x" * 256])
def test_a_saga_id_that_cannot_be_stored_is_refused(bad: object) -> None:
    with pytest.raises(InvalidSagaData) as err:
        check_id(bad)
    assert "saga_id" == err.value.key


def test_printable_ids_pass() -> None:
    assert "trip-42/pay:ü" == check_id("trip-42/pay:ü")


def test_an_error_text_made_storable_is_left_as_it_is() -> None:
    once = storable_text("x" * 100_000 + "\ud800\x00")
    assert once == storable_text(once)
    assert once is not None
    assert len(once) <= 8000
