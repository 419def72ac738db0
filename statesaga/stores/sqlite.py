"""`SQLiteStore`: the saga log in one SQLite file (stdlib `sqlite3`), the embedded default."""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..codec import storable_text, to_json
from ..exceptions import SagaNotFound
from ..records import SagaRecord, SagaStatus
from . import _reads_sql, _sql
from ._sqlite_db import SQLITE, SQLiteFile, clock, from_ts, ts
from .base import Commit, OutboxSignal, QueuedEvent, Signals, checked_event

_READS = _reads_sql.statements(SQLITE)

_Q = {name: SQLITE(getattr(_sql, name)) for name in (
    "INSERT_SAGA", "UPDATE_SAGA", "INSERT_TRANSITION", "INSERT_MESSAGE", "SELECT_SAGA",
    "SELECT_REVISION", "SELECT_HISTORY", "SELECT_HISTORIES", "CLAIM", "RENEW", "RELEASE",
    "REQUEST_ABORT", "INSERT_INBOX", "ENQUEUE", "SELECT_EVENTS", "CONSUME_EVENT",
    "CLAIM_MESSAGES", "MARK_SENT", "PARTICIPANT_STATE", "CONSUME", "SAVE_PARTICIPANT")}
# SQLite rewrites every index on a column an UPDATE sets, changed or not: when the status stays
# the same (most steps), this one leaves it, and the indexes on it, alone.
_UPDATE_SAME_STATUS = SQLITE(_sql.UPDATE_SAGA.replace("status = $4, ", "").replace(
    "revision = $2 - 1", "revision = $2 - 1 AND status = $4"))
_SAGA_EXISTS = SQLITE("SELECT 1 FROM {s}sagas WHERE saga_id = $1")


class SQLiteStore(SQLiteFile, _reads_sql.SQLReads):
    """The saga log in one SQLite file (WAL), safe for several processes on one machine.

    durability="full" (default): synchronous=FULL, every commit survives a power loss;
    "normal": synchronous=NORMAL, survives a process crash, may lose the last commits on power loss.
    Lease times with `now=None` come from this machine's clock. `writer_thread=True`: grouped
    writes run in a writer thread, so that the event loop goes on while they wait for their
    fsync (see `SQLiteFile`).
    """

    def __init__(self, path: str | os.PathLike[str], *, durability: str = "full",
                 busy_timeout: float = 5.0, writer_thread: bool = False) -> None:
        super().__init__(path, durability=durability, busy_timeout=busy_timeout,
                         writer_thread=writer_thread)
        self.outbox_signal = OutboxSignal()
        self._d, self._reads = SQLITE, _READS  # the read side (`_reads_sql.SQLReads`)
        self._to_db, self._from_db = ts, from_ts

    # -- the saga log --------------------------------------------------------------------

    async def create(
        self, record: SagaRecord, *, data_json: str, owner: str | None,
        now: float | None = None, lease: float | None = None, waiting: bool = False,
        messages: Sequence[Any] = (), wake_at: float | None = None,
    ) -> None:
        saga = _sql.saga_row(record, data_json, owner, lease, waiting, wake_at, clock(now), ts)
        history = _sql.history_rows(record, ts)
        outbox = _sql.message_rows(record.saga_id, messages, ts(record.created_at))

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
            return _sql.decode(row, history, from_ts, self.url)

        return await self._run(read, "BEGIN")

    async def commit(self, commit: Commit) -> Signals:
        update, transition = _sql.commit_rows(commit, ts)
        update = (*update[:-1], clock(commit.now))
        at = transition[2]

        def write(conn: sqlite3.Connection) -> Signals:
            if commit.consumed is not None:  # first: the count of events returned is after it
                conn.execute(_Q["CONSUME_EVENT"], (commit.saga_id, commit.consumed))
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
            return Signals(abort=done[0][0], events=done[0][1])

        signals: Signals = await self._grouped(write, commit.saga_id)
        if commit.messages:
            self.outbox_signal.notify()
        return signals

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> builtins.list[Any]:
        """One read statement's rows, its own transaction (for `_reads_sql.SQLReads`)."""
        return await self._run(lambda conn: conn.execute(sql, args).fetchall(), None)

    async def list(
        self, *, status: SagaStatus | None = None, name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        sql, params = SQLITE.listing(status, name, limit)

        def read(conn: sqlite3.Connection) -> list[SagaRecord]:
            rows = conn.execute(sql, params).fetchall()
            return _sql.decode_all(rows, _histories(conn, rows), from_ts, self.url)

        return await self._run(read, "BEGIN")

    # -- leases --------------------------------------------------------------------------

    async def claim(
        self, owner: str, *, now: float | None, lease: float, limit: int,
        definitions: Sequence[tuple[str, str]] | None = None, saga_id: str | None = None,
    ) -> builtins.list[SagaRecord]:
        now = clock(now)
        sql, params = SQLITE.claimable(_sql.SAGA, now=now, limit=limit,
                                       definitions=definitions, saga_id=saga_id, owner=owner)

        def write(conn: sqlite3.Connection) -> tuple[builtins.list[SagaRecord], int]:
            rows = conn.execute(sql, params).fetchall()
            if not rows:
                return [], 0
            ids = json.dumps([row["saga_id"] for row in rows])
            conn.execute(_Q["CLAIM"], (owner, now + lease, ids))
            history = _histories(conn, rows)
            if saga_id is not None:  # an operator's claim of one saga: a corrupt one raises
                return [_sql.decode(rows[0], history, from_ts, self.url, bump=1)], 1
            return _sql.decode_all(rows, history, from_ts, self.url, bump=1), len(rows)

        while True:  # corrupt sagas stay leased (out of the way), logged and skipped
            claimed, seen = await self._run(write)
            if claimed or not seen or lease <= 0:
                return claimed

    async def renew(self, owner: str, saga_ids: Sequence[str], *, now: float | None,
                    lease: float) -> dict[str, Signals]:
        args = (owner, json.dumps(list(saga_ids)), clock(now), lease)
        rows = await self._run(lambda conn: conn.execute(_Q["RENEW"], args).fetchall())
        return _sql.renewed(saga_ids, rows)

    async def release(self, owner: str, saga_ids: Sequence[str]) -> None:
        ids = json.dumps(list(saga_ids))
        await self._run(lambda conn: conn.execute(_Q["RELEASE"], (owner, ids)))

    async def request_abort(self, saga_id: str, reason: str) -> SagaStatus:
        args = (saga_id, storable_text(reason))
        row = await self._run(lambda conn: conn.execute(_Q["REQUEST_ABORT"], args).fetchone())
        if row is None:
            raise SagaNotFound(saga_id, self.url)
        return SagaStatus(row[0])

    # -- the event queue -----------------------------------------------------------------

    async def enqueue_event(self, saga_id: str, message_id: str, type: str, payload_json: str,
                            *, now: float | None = None) -> bool:
        checked_event(message_id, type, payload_json)
        args = (saga_id, message_id, type, payload_json,
                ts(datetime.fromtimestamp(clock(now), UTC)))

        def write(conn: sqlite3.Connection) -> bool:
            if conn.execute(_SAGA_EXISTS, (saga_id,)).fetchone() is None:
                raise SagaNotFound(saga_id, self.url)
            return conn.execute(_Q["ENQUEUE"], args).rowcount == 1

        return await self._run(write)

    async def queued_events(self, saga_id: str) -> builtins.list[QueuedEvent]:
        rows = await self._run(
            lambda conn: conn.execute(_Q["SELECT_EVENTS"], (saga_id,)).fetchall(), None)
        return _sql.queued(saga_id, rows, from_ts, self.url)

    # -- the outbox and participants (choreography) ----------------------------------------

    async def claim_messages(self, owner: str, *, now: float | None, lease: float,
                             limit: int) -> builtins.list[tuple[int, str]]:
        args = (owner, clock(now), lease, limit)
        rows = await self._run(lambda conn: conn.execute(_Q["CLAIM_MESSAGES"], args).fetchall())
        return sorted((row[0], row[1]) for row in rows)

    async def mark_sent(self, ids: Sequence[int]) -> None:
        args = (json.dumps(list(ids)), ts(datetime.now(UTC)))
        await self._run(lambda conn: conn.execute(_Q["MARK_SENT"], args))

    async def participant_state(self, participant: str, key: str, *,
                                message_id: str | None = None) -> dict[str, Any] | None:
        row = await self._run(lambda conn: conn.execute(
            _Q["PARTICIPANT_STATE"], (participant, key, message_id)).fetchone(), None)
        return _sql.participant_row(row, participant, key, message_id, self.url)

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        """Apply a participant's handling of one message atomically; False if a duplicate."""
        at = ts(datetime.now(UTC))
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

    def reopen(self) -> SQLiteStore:
        """The same file through a new connection, as a fresh process would open it."""
        return SQLiteStore(self.path, durability=self.durability, busy_timeout=self.busy_timeout,
                           writer_thread=self.writer_thread)


def _histories(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[sqlite3.Row]:
    ids = json.dumps([row["saga_id"] for row in rows])
    return conn.execute(_Q["SELECT_HISTORIES"], (ids,)).fetchall()
