"""`PostgresStore`'s connections: its pool, the idle connections it keeps between calls, its
batch connections, and what a failed call means (a refused statement, or an unknown outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..exceptions import CommitOutcomeUnknown, SagaError, StoreError, StoreRefused
from . import _sql
from .base import Opened
from .urls import redact

# The batch connections' settings. A batch's plan is made once (planning each cost 0.25-0.4
# ms), and while the table is small a scan of all of it looks cheaper than a lookup per saga:
# such plans (a sequential scan, a hash join over the whole primary key) grew batches 2-3x
# slower as sagas piled up. With these, a batch looks up each of its sagas by key.
BY_KEY = {"enable_seqscan": "off", "enable_hashjoin": "off", "enable_mergejoin": "off",
          "plan_cache_mode": "force_generic_plan"}
# SQLSTATEs that say the connection (not the statement) failed: class 08, and the server
# shutting down or refusing (57P01-57P03). A statement in flight then may have committed.
_LOST_STATES = ("57P01", "57P02", "57P03")
# SQLSTATE classes of a refused write: data exception (a NUL, a bad value), integrity
# constraint violation, program limit exceeded (a value too large).
_REFUSED_CLASSES = ("22", "23", "54")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


async def _keep_session(conn: Any) -> None:
    """The pool's reset on release: the store never changes a session, so a round trip saved."""


def _secrets(dsn: str) -> list[str]:
    """The passwords in `dsn` (user part or `password=`), as written and decoded."""
    parts = urlsplit(dsn)
    found = [parts.password or ""] + [v for k, v in parse_qsl(parts.query) if k == "password"]
    return sorted({s for p in found if p for s in (p, unquote(p))}, key=len, reverse=True)


class PgConnections(Opened):
    """A PostgreSQL database and schema: the pool opens on first use (or `open()`)."""

    def __init__(self, dsn: str, *, schema: str, min_size: int, max_size: int,
                 connect_timeout: float) -> None:
        if not _IDENTIFIER.fullmatch(schema):
            raise ValueError(f"schema must be an identifier (letters, digits and _, at most 63, "
                             f"not starting with a digit), not {schema!r}")
        try:
            import asyncpg
        except ImportError as exc:  # pragma: no cover - asyncpg is in the test environment
            raise StoreError("PostgresStore needs asyncpg: pip install 'statesaga[postgres]'"
                             ) from exc
        self._asyncpg: Any = asyncpg
        self._pool_options: dict[str, Any] = {"reset": _keep_session} if "reset" in \
            inspect.signature(asyncpg.create_pool).parameters else {}  # asyncpg >= 0.30
        self._failures = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError,
                          asyncpg.InternalClientError)
        self._dsn, self._secrets = dsn, _secrets(dsn)
        self.clock_offset = 0.0  # the server's clock minus this machine's (`StoreClock`)
        self.schema = schema
        self.min_size, self.max_size, self.connect_timeout = min_size, max_size, connect_timeout
        self.url = redact(dsn) if schema == "statesaga" else redact(
            f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}")
        self._d = _sql.Dialect(fill={
            "s": f'"{schema}".', "int": "BIGINT", "ts": "TIMESTAMPTZ",
            "float": "DOUBLE PRECISION", "bool": "BOOLEAN",
            "serial": "BIGINT GENERATED ALWAYS AS IDENTITY", "clustered": "",
            "autoincrement": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
            "n_column": ", n BIGINT GENERATED ALWAYS AS IDENTITY", "n": "n",
            "each": "jsonb_array_elements_text", "lock": " FOR UPDATE SKIP LOCKED",
            "numbers": "SELECT value::bigint FROM jsonb_array_elements_text",
            "pairs": "SELECT value ->> 0, value ->> 1 FROM jsonb_array_elements",
            "clock": "extract(epoch FROM statement_timestamp())::float8",
            "received": "coalesce(to_timestamp($5::float8), statement_timestamp())",
            "sagas_with": " WITH (fillfactor = 70)",  # room for HOT updates
            "pg": "", "sqlite": "SELECT 1 -- "})  # one database's statements (migrations)
        self._pool: Any = None
        self._lanes: list[Any] = []  # idle connections for grouped writes
        self._idle: list[Any] = []  # connections kept out of the pool: no acquire per call
        self._waiting = 0  # calls waiting for the pool: a connection done goes back to it
        self._opening = asyncio.Lock()

    @property
    def dsn(self) -> str:
        """The DSN, its password replaced by `***` (the store keeps the real one private)."""
        return redact(self._dsn)

    async def open(self) -> None:
        """Connect, and create or migrate the schema; `StoreError` if that fails."""
        async with self._opening:
            if self._pool is not None:
                return
            try:
                pool = await self._asyncpg.create_pool(
                    self._dsn, min_size=self.min_size, max_size=self.max_size,
                    timeout=self.connect_timeout, **self._pool_options)
            except self._failures as exc:
                raise StoreError(
                    f"cannot connect to the saga store {self.url} ({self._scrub(exc)}): check "
                    "that PostgreSQL runs there and that the URL is right") from exc
            try:
                async with pool.acquire() as conn:
                    await self._migrate(conn)
                    self.clock_offset = await self._offset(conn)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

    async def close(self) -> None:
        """Close the pool; the next call opens it again."""
        pool, self._pool = self._pool, None
        idle, self._idle = self._idle, []
        lanes, self._lanes = self._lanes, []
        for conn in lanes:
            with contextlib.suppress(*self._failures):
                await conn.close()
        if pool is not None:
            for conn in idle:
                await pool.release(conn)
            await pool.close()

    async def _offset(self, conn: Any) -> float:
        """How far the server's clock is ahead of this machine's (read halfway through a
        round trip). This machine's clock is read as it is (time.time, not a `Clock`): it is
        what is measured."""
        try:
            before = time.time()
            server = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
            return float(server) - (before + time.time()) / 2
        except self._failures as exc:
            raise self._failed(exc) from exc

    async def _migrate(self, conn: Any) -> None:
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                                   f"statesaga:{self.schema}")
                found = 0
                if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                       f'"{self.schema}".schema_version'):
                    found = await conn.fetchval(
                        self._d("SELECT max(version) FROM {s}schema_version"))
                steps = self._d.migrations(found or 0, self.url)
                if steps:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                for sql in steps:
                    await conn.execute(sql)
        except self._failures as exc:
            raise self._failed(exc) from exc

    def _connection(self, *, write: bool = False) -> Borrowed:
        """A connection for one call; `write`: a failure in flight is an unknown outcome."""
        return Borrowed(self, write)

    @contextlib.asynccontextmanager
    async def _lane(self) -> AsyncIterator[Any]:
        """A connection for one batch of grouped writes, outside the pool, whose plans find
        every row by key (`BY_KEY`)."""
        conn = None
        while self._lanes and conn is None:
            conn = self._lanes.pop()
            if conn.is_closed():
                conn = None
        try:
            if conn is None:
                if self._pool is None:
                    await self.open()  # the schema is there
                try:
                    conn = await self._asyncpg.connect(
                        self._dsn, timeout=self.connect_timeout, server_settings=BY_KEY)
                except self._failures as exc:  # nothing was sent
                    raise self._failed(exc) from exc
            yield conn
        except BaseException as exc:  # lost, or cancelled mid-statement: not reused
            if conn is not None:
                conn.terminate()
            if isinstance(exc, self._failures):
                raise self._failed(exc, write=True) from exc
            raise
        if self._pool is None:  # the store was closed meanwhile
            await conn.close()
        else:
            self._lanes.append(conn)

    def lost(self, exc: BaseException) -> bool:
        """Did the connection fail (rather than the statement, which the server rolled back)?"""
        if isinstance(exc, self._asyncpg.PostgresError):
            state = getattr(exc, "sqlstate", None) or ""
            return state.startswith("08") or state in _LOST_STATES
        return isinstance(exc, self._failures)

    def _failed(self, exc: BaseException, *, write: bool = False) -> StoreError:
        """The driver's error as a `StoreError` naming the store (never its password):
        `CommitOutcomeUnknown` if the connection failed while a write was in flight."""
        what = self._scrub(exc)
        if write and self.lost(exc):
            return CommitOutcomeUnknown(
                f"the connection to the saga store {self.url} failed while a write was in "
                f"flight ({what}): it may or may not have been stored; load the saga again "
                "before doing anything else with it")
        if not isinstance(exc, self._failures) or self._refused(exc):
            if not isinstance(exc, self._failures):  # refused by the driver before it was sent
                what = f"refused by the driver: {what}"
            return StoreRefused(
                f"the saga store {self.url} refused the write ({what}); the transaction was "
                "rolled back, so nothing was half-written")
        return StoreError(
            f"the saga store {self.url} failed ({what}); the transaction was rolled back, so "
            "nothing was half-written: fix the cause, then resume the saga")

    def _refused(self, exc: BaseException) -> bool:
        """Did the server refuse what was written (a value, a constraint, a trigger's raise),
        so that writing it again would fail again?"""
        state = getattr(exc, "sqlstate", None) or ""
        return isinstance(exc, self._asyncpg.PostgresError) and (
            state[:2] in _REFUSED_CLASSES or state == "P0001")

    def _scrub(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class Borrowed:
    """A connection for one call: one of the store's idle ones, else one from its pool.

    Back to the idle list after it, unless a call waits for the pool (more calls at once than
    `max_size`: it would wait forever for a connection kept idle) or the driver failed: then
    to the pool (reset or replaced, for a failure), and the error becomes a `StoreError`."""

    __slots__ = ("conn", "pool", "store", "write")

    def __init__(self, store: PgConnections, write: bool) -> None:
        self.store, self.write = store, write

    async def __aenter__(self) -> Any:
        store = self.store
        while store._idle:  # a lost connection was taken back by the pool: skip it
            conn = store._idle.pop()
            with contextlib.suppress(*store._failures):
                if not conn.is_closed():
                    self.pool, self.conn = store._pool, conn
                    return conn
                await store._pool.release(conn)
        store._waiting += 1  # no await since the idle list was found empty
        try:
            if store._pool is None:
                await store.open()
            self.pool = store._pool
            self.conn = await self.pool.acquire()
        except store._failures as exc:  # nothing was sent
            raise store._failed(exc) from exc
        finally:
            store._waiting -= 1
        return self.conn

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: Any) -> None:
        store = self.store
        if ((kind is None or issubclass(kind, SagaError)) and self.pool is store._pool
                and not store._waiting):
            store._idle.append(self.conn)
        else:  # the pool resets the connection, or terminates and replaces it
            with contextlib.suppress(*store._failures):
                await self.pool.release(self.conn)
        if isinstance(exc, store._failures) or (
                isinstance(exc, ValueError) and not isinstance(exc, SagaError)):
            raise store._failed(exc, write=self.write) from exc
