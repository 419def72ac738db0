"""JSON in and out of the saga log: never pickle, so a tampered store cannot run code.

A value is checked to be storable before anything is written: JSON types only, no lone
surrogate and no NUL character (PostgreSQL refuses both, so every store does), at most
`MAX_DEPTH` levels deep (deeper JSON could not be read back) and `MAX_BYTES` long. A
refused value raises `InvalidSagaData` naming where in it the culprit sits. Error texts
are never refused: `storable_text` makes any text storable.
"""

from __future__ import annotations

import json
from typing import Any

from .exceptions import InvalidSagaData

MAX_DEPTH = 100
MAX_BYTES = 16 * 2**20
MAX_ID = 255
MAX_TEXT = 8000

_encode = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode
_HINT = ("statesaga stores data and results as JSON, so use dict, list, str, int, float, bool "
         "or None (e.g. an ISO string for a datetime, str(...) for a Decimal or UUID)")


def to_json(value: Any, what: str, *, saga_id: str | None = None, step: str | None = None,
            root: str = "value") -> str:
    """`value` as JSON text, or `InvalidSagaData` naming `what`, the key and the problem.

    Fast for the common small value: the C encoder runs once, and the value is walked in
    Python only when the text is long enough to hide a deep nesting, or when it failed.
    """
    if value is None:
        return "null"
    try:
        text = _encode(value)
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
        raise _refuse(value, what, saga_id, step, root, exc) from None
    if "\\u0000" in text or len(text) > 2 * MAX_DEPTH:
        problem = _culprit(value, root, 0)
        if problem is not None:
            raise _refuse(value, what, saga_id, step, root, None, problem)
    if size > MAX_BYTES:
        raise InvalidSagaData(
            f"{what} cannot be stored: it is {size} bytes of JSON, more than the "
            f"{MAX_BYTES} a saga's value may hold; keep large payloads elsewhere (a blob "
            "store) and store their key", key=root, saga_id=saga_id, step=step)
    return text


def _refuse(value: Any, what: str, saga_id: str | None, step: str | None, root: str,
            exc: BaseException | None, problem: tuple[str, str] | None = None
            ) -> InvalidSagaData:
    problem = problem or _culprit(value, root, 0) or (root, f"cannot be encoded ({exc})")
    key, why = problem
    return InvalidSagaData(f"{what} cannot be stored: {key} {why}; {_HINT}",
                           key=key, saga_id=saga_id, step=step)


def _culprit(value: Any, path: str, depth: int) -> tuple[str, str] | None:
    """Where in `value` the first unstorable part sits, and why; None if it is storable."""
    if depth > MAX_DEPTH:
        return path, (f"nests deeper than {MAX_DEPTH} levels, more than a stored value may")
    if isinstance(value, str):
        return _bad_text(value, path)
    if value is None or isinstance(value, bool | int):
        return None
    if isinstance(value, float):
        return None if value == value and value not in (_INF, -_INF) else (
            path, f"is {value!r}, which JSON cannot hold")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str | int | float | bool) and k is not None:
                return path, f"has a key of type {type(k).__name__}"
            if isinstance(k, str) and (found := _bad_text(k, f"{path} key {k!r}")):
                return found
            if (found := _culprit(v, f"{path}[{k!r}]", depth + 1)) is not None:
                return found
        return None
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            if (found := _culprit(v, f"{path}[{i}]", depth + 1)) is not None:
                return found
        return None
    return path, f"is of type {type(value).__name__}, which is not JSON"


_INF = float("inf")


def _bad_text(text: str, path: str) -> tuple[str, str] | None:
    if "\x00" in text:
        return path, "holds a NUL character (\\x00), which a store cannot keep"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return path, (f"holds a lone surrogate ({text[exc.start]!r}) at index {exc.start}, "
                          "which is not valid Unicode text")
    return None


def from_json(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def storable_text(text: str | None, limit: int = MAX_TEXT) -> str | None:
    """`text` made storable, never refused: lone surrogates and NUL escaped, long text cut
    to `limit` characters, a note saying how much was cut included (so that it is stable:
    a text made storable is left as it is)."""
    if text is None:
        return None
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    if len(text) > limit:
        keep = limit - 40 if limit > 80 else limit  # room for the note
        text = f"{text[:keep]}... ({len(text) - keep} more characters)"
    return text


def check_id(saga_id: object, what: str = "saga_id") -> str:
    """A saga id as stores can keep it, or `InvalidSagaData` saying what is wrong with it."""
    if not isinstance(saga_id, str) or not saga_id:
        raise InvalidSagaData(f"{what} must be a non-empty string, not {saga_id!r}", key=what)
    if len(saga_id) > MAX_ID:
        raise InvalidSagaData(f"{what} is {len(saga_id)} characters long, more than the "
                              f"{MAX_ID} an id may have: {saga_id[:40]!r}...", key=what)
    if not saga_id.isprintable():  # NUL, control characters and lone surrogates are not
        raise InvalidSagaData(
            f"{what} {saga_id!r} holds a control character or a lone surrogate: ids are "
            "printable text (letters, digits, '-', '_', ':', '/', ...)", key=what)
    return saga_id
