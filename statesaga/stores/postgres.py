"""`PostgresStore`: the saga log in PostgreSQL over an `asyncpg` pool, for many workers."""

from __future__ import annotations

import builtins
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ..codec import storable_text, to_json
from ..exceptions import SagaError, SagaNotFound
from ..records import SagaRecord, SagaStatus
from . import _reads_sql, _sql
from ._group import GroupCommit, Outcome
from ._pg_conn import PgConnections
from ._pg_sql import (
    APPLY,
    CLAIM,
    HISTORY,
    TYPES,
    batch_json,
    commit_many_sql,
    commit_sql,
    create_many_sql,
    create_sql,
)
from .base import Commit, OutboxSignal, QueuedEvent, Signals, checked_event


def _ts(at: datetime) -> datetime:
    return at


class PostgresStore(PgConnections, _reads_sql.SQLReads):
    """The saga log in PostgreSQL, in its own schema (`schema`), created and migrated on first use.

    The pool opens on first use (or `await store.open()`); `close()` closes it. Writes of
    several sagas that are ready together go as one statement, on up to two connections of
    the store's own beside the pool (count them in the server's max_connections). Lease times
    with `now=None` come from the server's clock, so that workers' clocks need not agree.
    """

    def __init__(self, dsn: str, *, schema: str = "statesaga", min_size: int = 1,
                 max_size: int = 10, connect_timeout: float = 10.0) -> None:
        super().__init__(dsn, schema=schema, min_size=min_size, max_size=max_size,
                         connect_timeout=connect_timeout)
        self._reads = _reads_sql.statements(self._d)  # the read side (`_reads_sql.SQLReads`)
        self._to_db = self._from_db = _ts
        self._q = {name: self._d(getattr(_sql, name)) for name in (
            "SELECT_SAGA", "SELECT_REVISION", "SELECT_HISTORY", "SELECT_HISTORIES", "RENEW",
            "RELEASE", "REQUEST_ABORT", "ENQUEUE", "SELECT_EVENTS", "CLAIM_MESSAGES",
            "MARK_SENT", "PARTICIPANT_STATE")}
        self._saga_share = self._d("SELECT 1 FROM {s}sagas WHERE saga_id = $1 FOR SHARE")
        self._apply = self._d(APPLY)
        self._create = {(many, outbox): self._d(create_sql(many, outbox))
                        for many in (False, True) for outbox in (False, True)}
        self._commit = {key: self._d(commit_sql(*key)) for key in (
            (outbox, inbox, consumed) for outbox in (False, True) for inbox in (False, True)
            for consumed in (False, True))}
        self.outbox_signal = OutboxSignal()
        self._grouped: GroupCommit[Commit] = GroupCommit(self._flush)
        self._commit_many = self._d(commit_many_sql())
        self._grouped_create: GroupCommit[builtins.list[Any]] = GroupCommit(self._flush_creates)
        self._create_many = self._d(create_many_sql())

    # -- the saga log --------------------------------------------------------------------

    async def create(
        self, record: SagaRecord, *, data_json: str, owner: str | None,
        now: float | None = None, lease: float | None = None, waiting: bool = False,
        messages: Sequence[Any] = (), wake_at: float | None = None,
    ) -> None:
        saga = _sql.saga_row(record, data_json, owner, lease, waiting, wake_at, now, _ts)
        rows = _sql.history_rows(record, _ts)
        many = len(rows) != 1  # one transition (the usual start): plain parameters
        history = ((list(zip(*rows, strict=True)) or [()] * len(TYPES))[HISTORY] if many
                   else rows[0][HISTORY])
        args = [*saga, *history]
        if not many and not messages:  # the usual start: grouped with others ready now
            if not await self._grouped_create(args, record.saga_id):
                raise _sql.exists(record.saga_id)
            return
        if messages:
            args.append([m[1] for m in _sql.message_rows(record.saga_id, messages, None)])
        async with self._connection(write=True) as conn:
            if not await conn.fetchval(self._create[many, bool(messages)], *args):
                raise _sql.exists(record.saga_id)
        if messages:
            self.outbox_signal.notify()

    async def _flush_creates(self, rows: builtins.list[builtins.list[Any]]
                             ) -> builtins.list[Outcome]:
        """New sagas that are ready together: one statement; True for each one created. If
        the database refuses one of them, each is created on its own, with its own outcome."""
        if len(rows) > 1:
            async with self._lane() as conn:
                try:
                    created = {r[0] for r in await conn.fetch(self._create_many,
                                                              batch_json(rows))}
                    return [(True, row[0] in created) for row in rows]
                except self._asyncpg.PostgresError as exc:  # one id twice, a refused value
                    if self.lost(exc):
                        raise
        return [await self._alone(self._create_one, row, row[0]) for row in rows]

    async def _create_one(self, row: builtins.list[Any]) -> bool:
        async with self._connection(write=True) as conn:
            return bool(await conn.fetchval(self._create[False, False], *row))

    async def load(self, saga_id: str) -> SagaRecord:
        async with self._connection() as conn, self._snapshot(conn):
            row = await conn.fetchrow(self._q["SELECT_SAGA"], saga_id)
            if row is None:
                raise SagaNotFound(saga_id, self.url)
            history = await conn.fetch(self._q["SELECT_HISTORY"], saga_id)
        return _sql.decode(row, history, _ts, self.url)

    async def commit(self, commit: Commit) -> Signals:
        if commit.messages or commit.inbox is not None or commit.consumed is not None:
            signals = await self._commit_one(commit)
            if commit.messages:
                self.outbox_signal.notify()
            return signals
        grouped: Signals = await self._grouped(commit, commit.saga_id)
        return grouped

    async def _flush(self, commits: builtins.list[Commit]) -> builtins.list[Outcome]:
        """Plain commits that are ready together: one statement, one transaction. If the
        database refuses one of them, each is committed on its own, with its own outcome."""
        if len(commits) == 1:
            return [await self._alone(self._commit_one, commits[0], commits[0].saga_id)]
        rows = [(*update, *transition[3:]) for update, transition in
                (_sql.commit_rows(c, _ts) for c in commits)]
        outcomes: builtins.list[Outcome] = []
        async with self._lane() as conn:
            try:
                moved = await conn.fetch(self._commit_many, batch_json(rows))
            except self._asyncpg.PostgresError as exc:  # two writers of one saga, say
                if self.lost(exc):
                    raise
                moved = None
            signals = {row[0]: Signals(abort=row[1], events=row[2]) for row in moved or ()}
            for c in commits if moved is not None else ():
                if c.saga_id in signals:
                    outcomes.append((True, signals[c.saga_id]))
                    continue
                found = await conn.fetchrow(self._q["SELECT_REVISION"], c.saga_id, None)
                try:
                    _sql.missed(c, found, self.url)
                except SagaError as exc:  # this saga's own conflict
                    outcomes.append((False, exc))
        if moved is None:  # each commit on its own, through the pool: each its own outcome
            outcomes = [await self._alone(self._commit_one, c, c.saga_id) for c in commits]
        return outcomes

    async def _alone(self, write: Any, item: Any, saga_id: str) -> Outcome:
        """One saga's write in its own transaction: its outcome, whatever it raises."""
        try:
            return True, await write(item)
        except SagaError as exc:
            return False, exc
        except Exception as exc:  # a driver error: as a StoreError, for that saga alone
            return False, self._failed(exc, write=True)

    async def _commit_one(self, commit: Commit) -> Signals:
        update, transition = _sql.commit_rows(commit, _ts)
        args = [*update, *transition[3:]]
        if commit.messages:
            args.append([m[1] for m in _sql.message_rows(commit.saga_id, commit.messages, None)])
        if commit.inbox is not None:
            args.append(commit.inbox)
        if commit.consumed is not None:
            args.append(commit.consumed)
        sql = self._commit[bool(commit.messages), commit.inbox is not None,
                           commit.consumed is not None]
        async with self._connection(write=True) as conn:
            try:
                done = await conn.fetchrow(sql, *args)
            except self._asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "inbox_pkey":
                    raise
                raise _sql.duplicate(commit) from exc
            if done is None:
                found = await conn.fetchrow(self._q["SELECT_REVISION"], commit.saga_id,
                                            commit.inbox)
                _sql.missed(commit, found, self.url)
        return Signals(abort=done[0], events=done[1])

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> builtins.list[Any]:
        """One read statement's rows (for the read side, `_reads_sql.SQLReads`)."""
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def list(
        self, *, status: SagaStatus | None = None, name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        sql, params = self._d.listing(status, name, limit)
        async with self._connection() as conn, self._snapshot(conn):
            rows = await conn.fetch(sql, *params)
            history = await self._histories(conn, rows)
        return _sql.decode_all(rows, history, _ts, self.url)

    # -- leases --------------------------------------------------------------------------

    async def claim(
        self, owner: str, *, now: float | None, lease: float, limit: int,
        definitions: Sequence[tuple[str, str]] | None = None, saga_id: str | None = None,
    ) -> builtins.list[SagaRecord]:
        candidates, params = self._d.claimable(
            "saga_id, status", now=now, limit=limit, definitions=definitions, saga_id=saga_id,
            owner=owner, lock=" FOR UPDATE SKIP LOCKED")
        until = f"{_sql.now_sql(1)} + ${len(params) + 2}"
        sql = self._d(CLAIM.replace("{candidates}", candidates).replace(
            "{owner}", f"${len(params) + 1}").replace("{until}", until))
        while True:  # corrupt sagas stay leased (out of the way), logged and skipped
            async with self._connection(write=True) as conn:
                rows = sorted(await conn.fetch(sql, *params, owner, lease),
                              key=lambda row: (row["created_at"], row["n"]))
                history = await self._histories(conn, rows)
            if saga_id is not None and rows:  # an operator's claim of one saga: corrupt raises
                return [_sql.decode(rows[0], history, _ts, self.url)]
            claimed = _sql.decode_all(rows, history, _ts, self.url)
            if claimed or not rows or lease <= 0:
                return claimed

    async def renew(self, owner: str, saga_ids: Sequence[str], *, now: float | None,
                    lease: float) -> dict[str, Signals]:
        async with self._connection(write=True) as conn:
            rows = await conn.fetch(self._q["RENEW"], owner, json.dumps(list(saga_ids)), now,
                                    lease)
        return _sql.renewed(saga_ids, rows)

    async def release(self, owner: str, saga_ids: Sequence[str]) -> None:
        async with self._connection(write=True) as conn:
            await conn.execute(self._q["RELEASE"], owner, json.dumps(list(saga_ids)))

    async def request_abort(self, saga_id: str, reason: str) -> SagaStatus:
        async with self._connection(write=True) as conn:
            status = await conn.fetchval(self._q["REQUEST_ABORT"], saga_id,
                                         storable_text(reason))
        if status is None:
            raise SagaNotFound(saga_id, self.url)
        return SagaStatus(status)

    # -- the event queue -----------------------------------------------------------------

    async def enqueue_event(self, saga_id: str, message_id: str, type: str, payload_json: str,
                            *, now: float | None = None) -> bool:
        checked_event(message_id, type, payload_json)
        args = (saga_id, message_id, type, payload_json, now)
        async with self._connection(write=True) as conn, conn.transaction():
            # The saga's row, shared: a commit consuming this message now finishes first, so
            # that the insert below sees its inbox row (and does not queue the event again).
            if await conn.fetchval(self._saga_share, saga_id) is None:
                raise SagaNotFound(saga_id, self.url)
            done: str = await conn.execute(self._q["ENQUEUE"], *args)
        return done.endswith(" 1")

    async def queued_events(self, saga_id: str) -> builtins.list[QueuedEvent]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._q["SELECT_EVENTS"], saga_id)
        return _sql.queued(saga_id, rows, _ts, self.url)

    # -- the outbox and participants (choreography) ----------------------------------------

    async def claim_messages(self, owner: str, *, now: float | None, lease: float,
                             limit: int) -> builtins.list[tuple[int, str]]:
        async with self._connection(write=True) as conn:
            rows = await conn.fetch(self._q["CLAIM_MESSAGES"], owner, now, lease, limit)
        return sorted((row[0], row[1]) for row in rows)

    async def mark_sent(self, ids: Sequence[int]) -> None:
        async with self._connection(write=True) as conn:
            await conn.execute(self._q["MARK_SENT"], json.dumps(list(ids)), datetime.now(UTC))

    async def participant_state(self, participant: str, key: str, *,
                                message_id: str | None = None) -> dict[str, Any] | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(self._q["PARTICIPANT_STATE"], participant, key,
                                      message_id)
        return _sql.participant_row(row, participant, key, message_id, self.url)

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        """Apply a participant's handling of one message atomically; False if a duplicate."""
        state_json = to_json(state, f"{participant}'s state")
        outbox = [m[1] for m in _sql.message_rows(key, messages, None)]
        async with self._connection(write=True) as conn:
            applied = await conn.fetchval(self._apply, participant, key, message_id,
                                          datetime.now(UTC), state_json, outbox)
        if applied and outbox:
            self.outbox_signal.notify()
        return bool(applied)

    # -- the store itself ----------------------------------------------------------------

    @property
    def batches(self) -> int:
        """Transactions that carried plain commits (fewer than the commits: grouped)."""
        return self._grouped.batches

    def reopen(self) -> PostgresStore:
        """The same database and schema through a new pool, as a fresh process would open it."""
        return PostgresStore(self._dsn, schema=self.schema, min_size=self.min_size,
                             max_size=self.max_size, connect_timeout=self.connect_timeout)

    @staticmethod
    def _snapshot(conn: Any) -> Any:
        """A read-only transaction that sees one snapshot (a saga and its history agree)."""
        return conn.transaction(isolation="repeatable_read", readonly=True)

    async def _histories(self, conn: Any, rows: Sequence[Any]) -> Any:
        if not rows:
            return []
        ids = json.dumps([row["saga_id"] for row in rows])
        return await conn.fetch(self._q["SELECT_HISTORIES"], ids)
