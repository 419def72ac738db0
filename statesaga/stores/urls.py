"""Stores named by URL (`memory://`, `sqlite:///sagas.db`, `postgresql://...`), and redaction."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..exceptions import StoreError
from .base import SagaStore

SUPPORTED = ("memory://", "sqlite:///relative/path.db", "sqlite:////absolute/path.db",
             "postgresql://user:password@host:5432/db (or postgres://)")
_SQLITE_OPTIONS = {"durability": str, "busy_timeout": float}
_PASSWORD_PARAM = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def redact(url: str) -> str:
    """`url` with its password (in the user part or a `password=` argument) replaced by `***`."""
    parts = urlsplit(url)
    user, at, host = parts.netloc.rpartition("@")
    netloc = f"{user.split(':', 1)[0]}:***@{host}" if at and ":" in user else parts.netloc
    query = _PASSWORD_PARAM.sub(r"\1***", parts.query)
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def open_store(url: str) -> SagaStore:
    """The store `url` names; `StoreError` for a URL it cannot use, listing the supported ones."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    try:
        if scheme == "memory":
            from .memory import InMemoryStore

            return InMemoryStore()
        if scheme == "sqlite":
            return _sqlite(url)
        if scheme in ("postgresql", "postgres"):
            from .postgres import PostgresStore

            parts = urlsplit(url)
            args = parse_qsl(parts.query, keep_blank_values=True)
            schema = [v for k, v in args if k == "schema"]
            dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in args
                                                             if k != "schema"])))
            return PostgresStore(dsn, schema=schema[-1]) if schema else PostgresStore(dsn)
    except ValueError as exc:
        raise StoreError(f"cannot use the saga store URL {redact(url)!r}: {exc}") from exc
    raise StoreError(f"unknown saga store URL {redact(url)!r}: the supported ones are "
                     f"{', '.join(SUPPORTED)}")


def _sqlite(url: str) -> SagaStore:
    from .sqlite import SQLiteStore

    rest, _, query = url[len("sqlite://"):].partition("?")
    if not rest.startswith("/") or rest == "/":
        raise ValueError("a SQLite URL has three slashes before a relative path "
                         "(sqlite:///sagas.db) and four before an absolute one "
                         "(sqlite:////var/lib/sagas.db)")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in _SQLITE_OPTIONS:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(_SQLITE_OPTIONS)})")
        options[key] = _SQLITE_OPTIONS[key](value)
    return SQLiteStore(rest[1:], **options)
