"""JSON in and out of the saga log: a refused value names where it sits and what it is."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

import pytest

from statesaga import SagaError
from statesaga.codec import from_json, to_json


@pytest.mark.parametrize(("value", "where"), [
    ({"when": datetime.date(2026, 1, 1)}, "value['when'] is of type date"),
    ({"amounts": [1, decimal.Decimal("2.5")]}, "value['amounts'][1] is of type Decimal"),
    ({(1, 2): "tuple key"}, "value has a key of type tuple"),
    ({"ratio": float("nan")}, "value['ratio'] is nan"),
    ([{"ok": 1}, {"inf": float("inf")}], "value[1]['inf'] is inf"),
    ({1, 2}, "value is of type set"),
])
def test_a_value_that_is_not_json_is_refused_naming_where_it_sits(value: Any, where: str
                                                                  ) -> None:
    with pytest.raises(SagaError) as err:
        to_json(value, "the data of saga 's1'", saga_id="s1")
    assert f"the data of saga 's1' is not JSON: {where}" in str(err.value)
    assert "s1" == err.value.saga_id


def test_json_values_round_trip() -> None:
    value = {"a": [1, 2.5, None, True, "ü"], "b": {"c": "d"}}
    assert value == from_json(to_json(value, "x"))
    assert from_json(None) is None
    assert "null" == to_json(None, "x")
