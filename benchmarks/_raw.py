"""Raw driver calls, no statesaga code: the floor (one INSERT per step), and the statements a
real statesaga saga makes, recorded once and replayed with fresh saga ids (the most any code
reaches with statesaga's schema and statements)."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from statesaga import Orchestrator, PostgresStore, SQLiteStore

from .core import STEPS, definition, noop

Call = tuple[str, str, Any]  # (the driver method, the SQL, its arguments)


class SQLiteFloor:
    """A row per step, each INSERT its own transaction (autocommit), on one connection."""

    def __init__(self, path: str, durability: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode = WAL").fetchall()
        self.conn.execute(f"PRAGMA synchronous = {durability.upper()}")
        self.conn.execute("CREATE TABLE log (saga_id TEXT NOT NULL, seq INTEGER NOT NULL, "
                          "at REAL NOT NULL, state TEXT NOT NULL, PRIMARY KEY (saga_id, seq)) "
                          "WITHOUT ROWID")

    async def saga(self) -> None:
        saga_id = uuid.uuid4().hex
        for seq in range(STEPS):
            await noop(None)
            self.conn.execute("INSERT INTO log VALUES (?, ?, ?, ?)",
                              (saga_id, seq, time.time(), f"s{seq}"))


async def keep_session(conn: Any) -> None:
    """No reset query on release (as `PostgresStore` does): the floor pays no extra round trip."""


class PostgresFloor:
    """A row per step, each INSERT its own transaction; a saga borrows one pooled connection."""

    def __init__(self, pool: Any, schema: str) -> None:
        self.pool = pool
        self.insert = f'INSERT INTO "{schema}".log VALUES ($1, $2, $3, $4)'

    async def saga(self) -> None:
        saga_id = uuid.uuid4().hex
        async with self.pool.acquire() as conn:
            for seq in range(STEPS):
                await noop(None)
                await conn.execute(self.insert, saga_id, seq, time.time(), f"s{seq}")


def _swap(value: Any, old: str, new: str) -> Any:
    """`value` with the saga id `old` replaced by `new`, inside tuples and lists too."""
    if value == old:
        return new
    if isinstance(value, tuple | list):
        return type(value)(_swap(v, old, new) for v in value)
    return value


class Replay:
    """One real saga's driver calls, replayed with fresh saga ids; `prepare(n)` builds the
    arguments of the next n sagas beforehand, so that the timed loop only calls the driver."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.saga_id = ""
        self._ready: list[list[Call]] = []

    async def record(self, store: Any) -> None:
        """Run one saga on `store` (the driver's calls go to `self.calls`)."""
        self.saga_id = (await Orchestrator(store=store).run(definition())).saga_id

    async def saga(self) -> None:
        """Replay the next prepared saga's calls."""
        raise NotImplementedError

    def prepare(self, n: int) -> None:
        self._ready = []
        for _ in range(n):
            new = uuid.uuid4().hex
            self._ready.append([(m, sql, _swap(args, self.saga_id, new))
                                for m, sql, args in self.calls])

    async def next_saga(self) -> list[Call]:
        """The next saga's calls, after its steps (no-ops, as the floor's)."""
        for _ in range(STEPS):
            await noop(None)
        return self._ready.pop()


class _Recording:
    """A sqlite3 connection that notes every statement run through it."""

    def __init__(self, conn: sqlite3.Connection, calls: list[Call]) -> None:
        self._conn, self._calls = conn, calls

    def execute(self, sql: str, params: Any = ()) -> Any:
        self._calls.append(("execute", sql, tuple(params)))
        return self._conn.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> Any:
        rows = [tuple(row) for row in rows]
        self._calls.append(("executemany", sql, rows))
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class SQLiteStatements(Replay):
    """`SQLiteStore`'s statements for one saga, replayed on one connection of the same file."""

    def __init__(self, path: str, durability: str) -> None:
        super().__init__()
        self.path, self.durability = path, durability
        self.conn: sqlite3.Connection | None = None

    async def setup(self) -> None:
        store = SQLiteStore(self.path, durability=self.durability)
        await store.open()
        assert store._conn is not None
        store._conn = _Recording(store._conn, self.calls)  # type: ignore[assignment]
        await self.record(store)
        store._conn = store._conn._conn  # type: ignore[union-attr]
        await store.close()
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute(f"PRAGMA synchronous = {self.durability.upper()}")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    async def saga(self) -> None:
        assert self.conn is not None
        for method, sql, args in await self.next_saga():
            getattr(self.conn, method)(sql, args).fetchall()


class PostgresStatements(Replay):
    """`PostgresStore`'s statements for one saga (recorded at asyncpg's `Connection`),
    replayed on a pooled connection a saga borrows, as the floor does."""

    def __init__(self, pool: Any, schema: str) -> None:
        super().__init__()
        self.pool, self.schema = pool, schema

    async def setup(self, dsn: str) -> None:
        cls, calls = asyncpg.connection.Connection, self.calls
        originals = {m: getattr(cls, m) for m in ("execute", "fetch", "fetchrow", "fetchval")}

        def noting(method: str) -> Callable[..., Awaitable[Any]]:
            async def noted(conn: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
                calls.append((method, sql, args))
                return await originals[method](conn, sql, *args, **kwargs)
            return noted

        store = PostgresStore(dsn, schema=self.schema)
        await store.open()
        try:
            for method in originals:
                setattr(cls, method, noting(method))
            await self.record(store)
        finally:
            for method, original in originals.items():
                setattr(cls, method, original)
            await store.close()

    async def saga(self) -> None:
        calls = await self.next_saga()
        async with self.pool.acquire() as conn:
            for method, sql, args in calls:
                await getattr(conn, method)(sql, *args)
