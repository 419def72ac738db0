"""The SQLite store's file: its connections, schema, transactions and group commit.

Every write is one transaction; writes of several sagas ready together share one (group
commit), and a failure of one saga's write undoes only that saga's part of it. With a writer
thread, grouped writes (and their fsync) run there, one batch at a time, so the event loop
goes on meanwhile; reads stay on the loop, on a connection of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..exceptions import SagaError, StoreError, StoreRefused
from . import _sql
from ._group import GroupCommit, Outcome
from ._writer_thread import WriterThread
from .base import Opened

T = TypeVar("T")
Body = Callable[[sqlite3.Connection], Any]
_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
SQLITE = _sql.Dialect(numbered="?", fill={
    "s": "", "int": "INTEGER", "ts": "TEXT", "float": "REAL", "bool": "INTEGER",
    "serial": "INTEGER", "n_column": "", "n": "rowid", "each": "json_each",
    "numbers": "SELECT value FROM json_each",
    "clustered": " WITHOUT ROWID", "sagas_with": "", "lock": "", "received": "$5",
    "autoincrement": "INTEGER PRIMARY KEY AUTOINCREMENT",
    "clock": "((julianday('now') - 2440587.5) * 86400.0)",
    "pairs": "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each",
    "pg": "SELECT 1 -- ", "sqlite": "",  # one database's statements (`_schema.MIGRATIONS`)
})


def ts(at: datetime) -> str:
    """A time as SQLite keeps it: ISO text in UTC."""
    return at.astimezone(UTC).isoformat(timespec="microseconds")


from_ts = datetime.fromisoformat


def clock(now: float | None) -> float:
    """`now`, or the store's own clock (this machine's) when None.

    One machine, one clock: every process using one SQLite file runs on the machine that
    holds it (SQLite's locks do not hold over a network share), so leases, timers and
    deadlines all read the same clock, and a skew between workers cannot happen. (PostgreSQL
    serves many machines: its leases and timers read the database's clock, `StoreClock`.)"""
    return time.time() if now is None else now


class SQLiteFile(Opened):
    """One SQLite file (WAL), opened on first use: one connection, or with `writer_thread`
    one that writes in that thread and one that reads on the event loop.

    With `writer_thread`, a batch of grouped writes (sagas running together) goes to the
    thread, so the loop goes on while it waits for its fsync (the longest stall of the loop
    halved with 16 sagas in flight, measured); a lone write, when the thread is idle, runs
    right here: handing it over only slowed a lone saga (by 40%), which has nothing else for
    the loop to do meanwhile. Off by default: the hand-off's wake-up cost 4-9% of throughput
    with 16 sagas in flight in the stores benchmark. A write cancelled while its thread runs
    it is still written (as one cut off in flight on a server): read the saga again first.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "full",
                 busy_timeout: float = 5.0, writer_thread: bool = False) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, not {busy_timeout!r}")
        self.path = os.fspath(path)
        self.durability = durability
        self.busy_timeout = busy_timeout
        self.url = f"sqlite:///{self.path}" + ("?durability=normal" if durability == "normal"
                                                else "")
        self.writer_thread = writer_thread
        self._conn: sqlite3.Connection | None = None  # writes (in the writer thread, if any)
        self._reader: sqlite3.Connection | None = None  # reads, on the event loop
        self._thread: WriterThread | None = None
        self._grouped: GroupCommit[Body] = GroupCommit(self._flush)

    @property
    def batches(self) -> int:
        """Transactions that carried commits (fewer than the commits: grouped)."""
        return self._grouped.batches

    async def open(self) -> None:
        """Open the file and create or migrate its schema now (otherwise: on first use)."""
        await self._run(lambda conn: None, "BEGIN")

    async def close(self) -> None:
        """Close the connections (after the writes already handed to the writer thread); the
        next call opens them again."""
        reader, self._reader = self._reader, None
        if reader is not None and reader is not self._conn:
            reader.close()
        thread, self._thread = self._thread, None
        if thread is not None:
            await thread.run(self._close_writer)
            thread.stop()
        self._close_writer()

    def _close_writer(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # -- transactions ------------------------------------------------------------------

    async def _flush(self, bodies: list[Body]) -> list[Outcome]:
        """Write grouped commits in one transaction. If one saga's write fails (a conflict,
        a value the database refuses), the batch is written again with a savepoint each, so
        that only that saga fails and nothing of it is left (savepoints cost 2 statements)."""
        if len(bodies) == 1:
            return [(True, await self._run(bodies[0]))]
        try:
            return await self._run(lambda c: [(True, body(c)) for body in bodies], batch=True)
        except SagaError as exc:
            if _busy(exc.__cause__):  # the file stayed locked: so it would again
                raise
            return await self._run(lambda c: [self._savepoint(c, b) for b in bodies],
                                   batch=True)

    def _savepoint(self, conn: sqlite3.Connection, body: Body) -> Outcome:
        """Run one grouped commit; its failure undoes only it (a broken connection fails the
        savepoint's own statements, and with them the whole transaction)."""
        conn.execute("SAVEPOINT one")
        try:
            result = body(conn)
        except Exception as exc:  # this saga's alone
            conn.execute("ROLLBACK TO one")
            conn.execute("RELEASE one")
            return False, exc if isinstance(exc, SagaError) else self._error(exc)
        conn.execute("RELEASE one")
        return True, result

    async def _run(self, body: Callable[[sqlite3.Connection], T],
                   begin: str | None = "BEGIN IMMEDIATE", *, batch: bool = False) -> T:
        """Run `body` in one transaction, waiting (without blocking the loop) for the lock:
        a write ("BEGIN IMMEDIATE") on the writer's connection, a read on the reader's.

        `begin` None: `body` is one statement, its own transaction (no BEGIN and COMMIT).
        `batch`: grouped writes, for the writer thread."""
        deadline, delay = time.monotonic() + self.busy_timeout, 0.001
        while True:
            try:
                if begin == "BEGIN IMMEDIATE":
                    return await self._in_writer(
                        lambda: _transaction(self._writer(), begin, body), batch=batch)
                reader = self._reader if self._reader is not None else await self._open_reader()
                return _transaction(reader, begin, body)
            except (sqlite3.Error, ValueError, OverflowError) as exc:  # ValueError: a text
                if not _busy(exc):  # with a lone surrogate, that the driver cannot encode
                    raise self._error(exc) from exc
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreError(
                        f"the saga store {self.url} is locked: another process has held its "
                        f"write lock for more than busy_timeout={self.busy_timeout}s; nothing "
                        "was written, so the saga can be resumed (find that process, or raise "
                        "busy_timeout)") from exc
                await asyncio.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)

    async def _in_writer(self, call: Callable[[], T], *, batch: bool = False) -> T:
        """`call()` on the writer's connection: right here, unless it is a `batch` for the
        writer thread or that thread is busy (then after what it was handed before)."""
        if not self.writer_thread or (not batch and not (self._thread and self._thread.busy)):
            return call()  # the thread, if any, is idle: nothing else uses the connection
        if self._thread is None:
            self._thread = WriterThread("statesaga-sqlite-writer")
        return await self._thread.run(call)

    def _writer(self) -> sqlite3.Connection:
        return self._conn if self._conn is not None else self._open()

    async def _open_reader(self) -> sqlite3.Connection:
        """The readers' connection: the writer's own without a thread; else one more, opened
        once the writer's (in its thread) has created or migrated the schema."""
        if not self.writer_thread:
            self._reader = self._writer()
            return self._reader
        if self._conn is None:  # not opened yet (it may have to create the schema)
            await self._in_writer(self._writer)
        if self._reader is None:
            reader = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                     check_same_thread=False)
            reader.row_factory = sqlite3.Row
            self._reader = reader
        return self._reader

    def _error(self, exc: Exception) -> StoreError:
        full = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL
        hint = "free disk space" if full else "fix the cause"
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError | UnicodeError):
            return StoreRefused(  # a value or a constraint: writing it again fails again
                f"the saga store {self.url} refused the write ({type(exc).__name__}: {exc}); "
                "the transaction was rolled back, so nothing was half-written")
        return StoreError(f"the saga store {self.url} failed ({type(exc).__name__}: {exc}); "
                          f"the transaction was rolled back, so nothing was half-written: {hint}, "
                          "then resume the saga")

    def _open(self) -> sqlite3.Connection:
        """Connect, check (and migrate) the schema, then switch to WAL and set the durability."""
        if sqlite3.sqlite_version_info < (3, 35):  # pragma: no cover - RETURNING is needed
            raise StoreError(f"SQLiteStore needs SQLite 3.35 or newer; this Python has "
                             f"{sqlite3.sqlite_version}: use a newer Python build")
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None,
                                   check_same_thread=False)
            try:
                conn.row_factory = sqlite3.Row
                _transaction(conn, "BEGIN IMMEDIATE", self._migrate)
                conn.execute("PRAGMA journal_mode = WAL").fetchall()
                conn.execute(f"PRAGMA synchronous = {_SYNCHRONOUS[self.durability]}")
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            if _busy(exc):
                raise  # `_run` waits for the lock and tries again
            raise StoreError(f"cannot open the saga store {self.url} ({type(exc).__name__}: "
                             f"{exc}): check the path, its permissions and free disk space"
                             ) from exc
        self._conn = conn
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        known = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = "
                             "'schema_version'").fetchone()
        found = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] \
            if known else 0
        for sql in SQLITE.migrations(found or 0, self.url):
            conn.execute(sql)


def _busy(exc: BaseException | None) -> bool:
    return isinstance(exc, sqlite3.Error) and \
        getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


def _transaction(conn: sqlite3.Connection, begin: str | None,
                 body: Callable[[sqlite3.Connection], T]) -> T:
    if begin is None:
        return body(conn)
    conn.execute(begin)
    try:
        result = body(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result
