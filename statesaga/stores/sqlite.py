"""`SQLiteStore`: the saga log in one SQLite file (stdlib `sqlite3`), the embedded default."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..codec import to_json
from ..exceptions import SagaError, SagaNotFound, StoreError
from ..records import SagaRecord, SagaStatus
from . import _reads_sql, _sql
from ._group import GroupCommit, Outcome
from .base import Commit, OutboxSignal

T = TypeVar("T")
_SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}
_SQLITE = _sql.Dialect(numbered="?", fill={
    "s": "", "int": "INTEGER", "ts": "TEXT", "float": "REAL", "bool": "INTEGER",
    "serial": "INTEGER", "n_column": "", "n": "rowid", "each": "json_each",
    "numbers": "SELECT value FROM json_each",
    "clustered": " WITHOUT ROWID", "sagas_with": "",
    "pairs": "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each",
    "pg": "SELECT 1 -- ", "sqlite": "",  # one database's statements (`_sql.MIGRATIONS`)
})

_Q = {name: _SQLITE(getattr(_sql, name)) for name in (
    "INSERT_SAGA", "UPDATE_SAGA", "INSERT_TRANSITION", "INSERT_MESSAGE", "SELECT_SAGA",
    "SELECT_REVISION", "SELECT_HISTORY", "SELECT_HISTORIES", "CLAIM", "RENEW", "RELEASE",
    "REQUEST_ABORT", "INSERT_INBOX", "PENDING_MESSAGES", "MARK_SENT", "PARTICIPANT_STATE",
    "CONSUME", "SAVE_PARTICIPANT")}
# SQLite rewrites every index on a column an UPDATE sets, changed or not: when the status stays
# the same (most steps), this one leaves it, and the indexes on it, alone.
_UPDATE_SAME_STATUS = _SQLITE(
    "UPDATE sagas SET revision = $2, state = $3, error = $5, updated_at = $6, owner = $7, "
    "lease_until = $8, waiting = $9, wake_at = $10 WHERE saga_id = $1 AND revision = $2 - 1 "
    "AND status = $4 RETURNING abort_reason")


def _ts(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


_from_ts = datetime.fromisoformat
_READS = _reads_sql.statements(_SQLITE)


class SQLiteStore(_reads_sql.SQLReads):
    """The saga log in one SQLite file (WAL), safe for several processes on one machine.

    durability="full" (default): synchronous=FULL, every commit survives a power loss;
    "normal": synchronous=NORMAL, survives a process crash, may lose the last commits on power loss.
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "full",
                 busy_timeout: float = 5.0) -> None:
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'full' or 'normal', not {durability!r}")
        if busy_timeout < 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, not {busy_timeout!r}")
        self.path = os.fspath(path)
        self.durability = durability
        self.busy_timeout = busy_timeout
        self.url = f"sqlite:///{self.path}" + ("?durability=normal" if durability == "normal"
                                                else "")
        self._conn: sqlite3.Connection | None = None
        self._grouped: GroupCommit[Callable[[sqlite3.Connection], Any]] = GroupCommit(
            self._flush)
        self.outbox_signal = OutboxSignal()
        self._d, self._reads = _SQLITE, _READS
        self._to_db, self._from_db = _ts, _from_ts

    # -- the saga log --------------------------------------------------------------------

    async def create(
        self, record: SagaRecord, *, data_json: str, owner: str | None,
        lease_until: float | None, waiting: bool = False, messages: Sequence[Any] = (),
        wake_at: float | None = None,
    ) -> None:
        saga = _sql.saga_row(record, data_json, owner, lease_until, waiting, wake_at, _ts)
        history = _sql.history_rows(record, _ts)
        outbox = _sql.message_rows(record.saga_id, messages, _ts(record.created_at))

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute(_Q["INSERT_SAGA"], saga).rowcount == 0:
                raise _sql.exists(record.saga_id)
            conn.executemany(_Q["INSERT_TRANSITION"], history)
            if outbox:
                conn.executemany(_Q["INSERT_MESSAGE"], outbox)

        await self._grouped(write, record.saga_id)  # with the other writes ready now
        if outbox:
            self.outbox_signal.notify()

    async def load(self, saga_id: str) -> SagaRecord:
        def read(conn: sqlite3.Connection) -> SagaRecord:
            row = conn.execute(_Q["SELECT_SAGA"], (saga_id,)).fetchone()
            if row is None:
                raise SagaNotFound(saga_id, self.url)
            history = conn.execute(_Q["SELECT_HISTORY"], (saga_id,)).fetchall()
            return _sql.decode(row, history, _from_ts, self.url)

        return await self._run(read, "BEGIN")

    async def commit(self, commit: Commit) -> str | None:
        update, transition = _sql.commit_rows(commit, _ts)
        at = transition[2]

        def write(conn: sqlite3.Connection) -> str | None:
            done = None if commit.status.is_terminal else conn.execute(
                _UPDATE_SAME_STATUS, update).fetchall()
            done = done or conn.execute(_Q["UPDATE_SAGA"], update).fetchall()
            if not done:
                found = conn.execute(_Q["SELECT_REVISION"], (commit.saga_id, commit.inbox))
                _sql.missed(commit, found.fetchone(), self.url)
            conn.execute(_Q["INSERT_TRANSITION"], transition)
            if commit.inbox is not None:
                try:
                    conn.execute(_Q["INSERT_INBOX"], (commit.saga_id, commit.inbox, at))
                except sqlite3.IntegrityError:
                    raise _sql.duplicate(commit) from None
            if commit.messages:
                conn.executemany(_Q["INSERT_MESSAGE"],
                                 _sql.message_rows(commit.saga_id, commit.messages, at))
            reason: str | None = done[0][0]
            return reason

        abort: str | None = await self._grouped(write, commit.saga_id)
        if commit.messages:
            self.outbox_signal.notify()
        return abort

    async def list(
        self, *, status: SagaStatus | None = None, name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        sql, params = _SQLITE.listing(status, name, limit)

        def read(conn: sqlite3.Connection) -> list[SagaRecord]:
            rows = conn.execute(sql, params).fetchall()
            return _sql.decode_all(rows, _histories(conn, rows), _from_ts, self.url)

        return await self._run(read, "BEGIN")

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> builtins.list[Any]:
        """One read statement's rows, its own transaction (for `_reads_sql.SQLReads`)."""
        return await self._run(lambda conn: conn.execute(sql, args).fetchall(), None)

    async def claim(
        self, owner: str, *, now: float, lease: float, limit: int,
        definitions: Sequence[tuple[str, str]] | None = None, saga_id: str | None = None,
    ) -> builtins.list[SagaRecord]:
        sql, params = _SQLITE.claimable(_sql.SAGA, now=now, limit=limit,
                                        definitions=definitions, saga_id=saga_id)

        def write(conn: sqlite3.Connection) -> tuple[builtins.list[SagaRecord], int]:
            rows = conn.execute(sql, params).fetchall()
            if not rows:
                return [], 0
            ids = json.dumps([row["saga_id"] for row in rows])
            conn.execute(_Q["CLAIM"], (owner, now + lease, ids))
            history = _histories(conn, rows)
            if saga_id is not None:  # an operator's claim of one saga: a corrupt one raises
                return [_sql.decode(rows[0], history, _from_ts, self.url,
                                    rows[0]["revision"] + 1)], 1
            return _sql.decode_all(rows, history, _from_ts, self.url, bump=1), len(rows)

        while True:  # corrupt sagas stay leased (out of the way), logged and skipped
            claimed, seen = await self._run(write)
            if claimed or not seen or lease <= 0:
                return claimed

    async def renew(self, owner: str, saga_ids: Sequence[str], until: float) -> None:
        ids = json.dumps(list(saga_ids))
        await self._run(lambda conn: conn.execute(_Q["RENEW"], (owner, ids, until)))

    async def release(self, owner: str, saga_ids: Sequence[str]) -> None:
        ids = json.dumps(list(saga_ids))
        await self._run(lambda conn: conn.execute(_Q["RELEASE"], (owner, ids)))

    async def request_abort(self, saga_id: str, reason: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if conn.execute(_Q["REQUEST_ABORT"], (saga_id, reason)).rowcount == 0:
                raise SagaNotFound(saga_id, self.url)

        await self._run(write)

    # -- the outbox and participants (choreography) ----------------------------------------

    async def pending_messages(self, limit: int = 100) -> builtins.list[tuple[int, str]]:
        """Outbox messages not yet sent, oldest first: (id, JSON text)."""
        rows = await self._run(
            lambda conn: conn.execute(_Q["PENDING_MESSAGES"], (limit,)).fetchall(), None)
        return [(row[0], row[1]) for row in rows]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        args = (json.dumps(list(ids)), _ts(datetime.now(UTC)))
        await self._run(lambda conn: conn.execute(_Q["MARK_SENT"], args))

    async def participant_state(self, participant: str, key: str) -> dict[str, Any] | None:
        """A participant's state for one saga (None before its first message)."""
        row = await self._run(lambda conn: conn.execute(
            _Q["PARTICIPANT_STATE"], (participant, key)).fetchone(), None)
        return None if row is None else _sql.participant_state(row[0], participant, key,
                                                                self.url)

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        """Apply a participant's handling of one message atomically; False if a duplicate."""
        at = _ts(datetime.now(UTC))
        args = (participant, key, message_id, at, to_json(state, f"{participant}'s state"))
        outbox = _sql.message_rows(key, messages, at)

        def write(conn: sqlite3.Connection) -> bool:
            if conn.execute(_Q["CONSUME"], args[:4]).rowcount == 0:
                return False
            conn.execute(_Q["SAVE_PARTICIPANT"], args)
            if outbox:
                conn.executemany(_Q["INSERT_MESSAGE"], outbox)
            return True

        applied = await self._run(write)
        if applied and outbox:
            self.outbox_signal.notify()
        return applied

    @property
    def batches(self) -> int:
        """Transactions that carried commits (fewer than the commits: grouped)."""
        return self._grouped.batches

    def reopen(self) -> SQLiteStore:
        """The same file through a new connection, as a fresh process would open it."""
        return SQLiteStore(self.path, durability=self.durability, busy_timeout=self.busy_timeout)

    async def open(self) -> None:
        """Open the file and create or migrate its schema now (otherwise: on first use)."""
        await self._run(lambda conn: None, "BEGIN")

    async def close(self) -> None:
        """Close the connection; the next call opens it again."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- transactions ------------------------------------------------------------------

    async def _flush(self, bodies: builtins.list[Callable[[sqlite3.Connection], Any]]
                     ) -> builtins.list[Outcome]:
        """Write grouped commits in one transaction; if one saga's write fails (a conflict, a
        duplicate), that transaction is rolled back and the batch written again with a
        savepoint each, so that only that saga fails (savepoints cost 2 statements each)."""
        if len(bodies) == 1:
            return [(True, await self._run(bodies[0]))]
        try:
            return await self._run(lambda c: [(True, body(c)) for body in bodies])
        except SagaError:
            return await self._run(lambda c: [_savepoint(c, b) for b in bodies])

    async def _run(self, body: Callable[[sqlite3.Connection], T],
                   begin: str | None = "BEGIN IMMEDIATE") -> T:
        """Run `body` in one transaction, waiting (without blocking the loop) for the lock.

        `begin` None: `body` is one statement, its own transaction (no BEGIN and COMMIT)."""
        deadline, delay = time.monotonic() + self.busy_timeout, 0.001
        while True:
            try:
                conn = self._conn if self._conn is not None else self._open()
                return _transaction(conn, begin, body)
            except sqlite3.Error as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
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

    def _error(self, exc: sqlite3.Error) -> StoreError:
        full = getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL
        hint = "free disk space" if full else "fix the cause"
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
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
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
        for sql in _SQLITE.migrations(found or 0, self.url):
            conn.execute(sql)


def _histories(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
    ids = json.dumps([row["saga_id"] for row in rows])
    return conn.execute(_Q["SELECT_HISTORIES"], (ids,)).fetchall()


def _savepoint(conn: sqlite3.Connection, body: Callable[[sqlite3.Connection], T]
               ) -> tuple[bool, Any]:
    """Run one grouped commit; a saga error undoes only it, anything else fails the group."""
    conn.execute("SAVEPOINT one")
    try:
        result = body(conn)
    except SagaError as exc:  # a conflict or a duplicate: this saga's alone
        conn.execute("ROLLBACK TO one")
        conn.execute("RELEASE one")
        return False, exc
    conn.execute("RELEASE one")
    return True, result


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
