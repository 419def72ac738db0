"""Typed saga data: an attrs class or a dataclass for steps, a JSON object for the store.

`DataType(Booking).dump(value)` checks an instance or a dict of its fields and returns
the JSON object the store keeps; `.load(obj)` makes the instance again. cattrs converts:
nested classes, datetimes (ISO 8601 text, offset kept), enums (by value), lists, dicts,
optionals. Checks are strict: no "12" for an int, no unknown field, every problem named
by its path (`data.flight.number`) in one `InvalidSagaData`.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import make_dict_structure_fn
from cattrs.preconf.json import make_converter

from .exceptions import InvalidSagaData


def _strict(kind: type) -> Callable[[Any, Any], Any]:
    """A structure hook that takes only `kind` itself: cattrs would turn "12" into 12."""
    def hook(value: Any, _: Any) -> Any:
        if isinstance(value, kind) and (kind is bool or not isinstance(value, bool)):
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # JSON does not tell 1 from 1.0
        raise TypeError(f"got {type(value).__name__} {value!r}")
    return hook


def json_converter() -> cattrs.Converter:
    """cattrs' JSON converter, refusing unknown fields and values of another type."""
    converter = make_converter(forbid_extra_keys=True)
    for kind in (str, int, float, bool):
        converter.register_structure_hook(kind, _strict(kind))

    def record(cls: type) -> Callable[[Any, Any], Any]:
        fields: Callable[[Any, Any], Any] = make_dict_structure_fn(
            cls, converter, _cattrs_forbid_extra_keys=True)

        def hook(value: Any, kind: Any) -> Any:
            if not isinstance(value, Mapping):
                raise TypeError(f"got {type(value).__name__} {value!r}")
            return fields(value, kind)
        return hook

    converter.register_structure_hook_factory(_is_record, record)
    return converter


def _is_record(cls: Any) -> bool:
    return isinstance(cls, type) and (attrs.has(cls) or dataclasses.is_dataclass(cls))


CONVERTER = json_converter()


@attrs.frozen
class DataType:
    """How one class of saga data (or of a step's result) goes to the store and back.

    `cls` is an attrs class or a dataclass; `converter` a cattrs converter for types the
    default one does not know (Decimal, UUID...).
    """

    cls: type = attrs.field()
    converter: cattrs.Converter = attrs.field(default=CONVERTER, repr=False)

    @cls.validator
    def _check(self, _: Any, cls: Any) -> None:
        if not _is_record(cls):
            raise TypeError(f"typed data must be an attrs class or a dataclass, not {cls!r}")

    @property
    def name(self) -> str:
        """The class's qualified name, `module.Class`: it goes into the saga's version."""
        return f"{self.cls.__module__}.{self.cls.__qualname__}"

    def versioned(self, version: str) -> str:
        """A definition's `version` (a graph's hash) with this class folded in."""
        text = f"{version}:{self.name}".encode()
        return hashlib.sha256(text).hexdigest()[: len(version)]

    def dump(self, value: Any, what: str = "the data", *, root: str = "data",
             saga_id: str | None = None, step: str | None = None) -> dict[str, Any]:
        """`value` (an instance or a dict of its fields), checked, as the JSON object stored."""
        if isinstance(value, self.cls):
            try:
                obj = self.converter.unstructure(value, self.cls)
            except Exception as exc:  # a field holding what its type cannot write
                raise InvalidSagaData(f"{what} does not fit {self.cls.__qualname__}: {exc}",
                                      key=root, saga_id=saga_id, step=step) from exc
        elif isinstance(value, Mapping):
            obj = dict(value)
        else:
            raise InvalidSagaData(
                f"{what} must be a {self.cls.__qualname__} or a dict of its fields, not "
                f"{type(value).__name__}", key=root, saga_id=saga_id, step=step)
        dumped: dict[str, Any] = self.converter.unstructure(
            self.load(obj, what, root=root, saga_id=saga_id, step=step), self.cls)
        return dumped

    def load(self, obj: Any, what: str = "the data", *, root: str = "data",
             saga_id: str | None = None, step: str | None = None) -> Any:
        """The instance a stored JSON object stands for; `InvalidSagaData` naming each path."""
        try:
            return self.converter.structure(obj, self.cls)
        except Exception as exc:
            problems = _problems(exc, root)
            raise InvalidSagaData(
                f"{what} does not fit {self.cls.__qualname__}: "
                + "; ".join(f"{path}: {why}" for path, why in problems),
                key=problems[0][0], saga_id=saga_id, step=step) from exc


def _problems(exc: BaseException, root: str) -> list[tuple[str, str]]:
    """Every (path, what is wrong) in a cattrs error, in the order of the fields."""
    if not isinstance(exc, cattrs.BaseValidationError):
        return [(root, _why(exc, None))]
    out = []
    for line in cattrs.transform_error(exc, path=root, format_exception=_why):
        why, _, path = line.rpartition(" @ ")
        out.append((path, why))
    return out


def _why(exc: BaseException, kind: Any) -> str:
    """What is wrong at one path, for people: "expected int, got str '12'"."""
    if isinstance(exc, KeyError):
        return "missing"
    if isinstance(exc, ForbiddenExtraKeysError):
        return f"unknown fields {', '.join(map(repr, sorted(exc.extra_fields)))}"
    if kind is None:
        return f"cannot be read ({exc})"
    expected = getattr(kind, "__qualname__", None) or repr(kind)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return f"expected one of {', '.join(repr(m.value) for m in kind)} ({expected})"
    if kind is datetime:
        expected = "a datetime as ISO 8601 text"
    text = str(exc)
    return f"expected {expected}, {text}" if text.startswith("got ") else (
        f"expected {expected} ({text})")
