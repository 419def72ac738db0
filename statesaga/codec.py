"""JSON in and out of the saga log: never pickle, so a tampered store cannot run code."""

from __future__ import annotations

import json
from typing import Any

from .exceptions import SagaError

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


def to_json(value: Any, what: str, *, saga_id: str | None = None, step: str | None = None) -> str:
    """`value` as JSON text, or a `SagaError` naming `what` and the offending type."""
    if value is None:
        return "null"
    try:
        return _encode(value)
    except (TypeError, ValueError) as exc:
        raise SagaError(
            f"{what} is not JSON: {_culprit(value) or type(value).__name__} ({exc}); statesaga "
            "stores data and results "
            "as JSON, so use dict, list, str, int, float, bool or None (e.g. an ISO string "
            "for a datetime, str(...) for a Decimal or UUID)",
            saga_id=saga_id, step=step,
        ) from exc


def _culprit(value: Any, path: str = "value") -> str:
    """Where in `value` the first non-JSON part sits, and its type."""
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int | float | bool) and k is not None:
                return f"{path} has a key of type {type(k).__name__}"
            found = _culprit(v, f"{path}[{k!r}]")
            if found:
                return found
        return ""
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found = _culprit(v, f"{path}[{i}]")
            if found:
                return found
        return ""
    if value is None or isinstance(value, str | int | bool):
        return ""
    if isinstance(value, float):
        return "" if value == value and value not in (float("inf"), float("-inf")) else \
            f"{path} is {value!r}"
    return f"{path} is of type {type(value).__name__}"


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)
