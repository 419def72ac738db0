"""`PostgresStore`: the saga log in PostgreSQL over an `asyncpg` pool, for many workers."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import inspect
import json
import re
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Any

from ..codec import to_json
from ..exceptions import SagaError, SagaNotFound, StoreError
from ..records import SagaRecord, SagaStatus
from . import _reads_sql, _sql
from ._group import GroupCommit, Outcome
from ._pg_conn import BY_KEY, Borrowed
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
from .base import Commit, OutboxSignal
from .urls import redact

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _ts(at: datetime) -> datetime:
    return at


async def _keep_session(conn: Any) -> None:
    """The pool's reset on release: the store never changes a session, so a round trip saved."""


class PostgresStore(_reads_sql.SQLReads):
    """The saga log in PostgreSQL, in its own schema (`schema`), created and migrated on first use.

    The pool opens on first use (or `await store.open()`); `close()` closes it. Writes of
    several sagas that are ready together go as one statement, on up to two connections of
    the store's own beside the pool (count them in the server's max_connections).
    """

    def __init__(self, dsn: str, *, schema: str = "statesaga", min_size: int = 1,
                 max_size: int = 10, connect_timeout: float = 10.0) -> None:
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
        self.dsn, self.schema = dsn, schema
        self.min_size, self.max_size, self.connect_timeout = min_size, max_size, connect_timeout
        self.url = redact(dsn) if schema == "statesaga" else redact(
            f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}")
        self._d = _sql.Dialect(fill={
            "s": f'"{schema}".', "int": "BIGINT", "ts": "TIMESTAMPTZ",
            "float": "DOUBLE PRECISION", "bool": "BOOLEAN",
            "serial": "BIGINT GENERATED ALWAYS AS IDENTITY", "clustered": "",
            "n_column": ", n BIGINT GENERATED ALWAYS AS IDENTITY", "n": "n",
            "each": "jsonb_array_elements_text",
            "numbers": "SELECT value::bigint FROM jsonb_array_elements_text",
            "pairs": "SELECT value ->> 0, value ->> 1 FROM jsonb_array_elements",
            "sagas_with": " WITH (fillfactor = 70)",  # room for HOT updates
            "pg": "", "sqlite": "SELECT 1 -- "})  # one database's statements (`_sql.MIGRATIONS`)
        self._q = {name: self._d(getattr(_sql, name)) for name in (
            "SELECT_SAGA", "SELECT_REVISION", "SELECT_HISTORY", "SELECT_HISTORIES", "RENEW",
            "RELEASE", "REQUEST_ABORT", "PENDING_MESSAGES", "MARK_SENT", "PARTICIPANT_STATE")}
        self._reads = _reads_sql.statements(self._d)
        self._to_db = self._from_db = _ts
        self._apply = self._d(APPLY)
        self._create = {(many, outbox): self._d(create_sql(many, outbox))
                        for many in (False, True) for outbox in (False, True)}
        self._commit = {(outbox, inbox): self._d(commit_sql(outbox, inbox))
                        for outbox in (False, True) for inbox in (False, True)}
        self._pool: Any = None
        self._lanes: list[Any] = []  # idle connections for grouped writes
        self._idle: list[Any] = []  # connections kept out of the pool: no acquire per call
        self._waiting = 0  # calls waiting for the pool: a connection done goes back to it
        self._opening = asyncio.Lock()
        self.outbox_signal = OutboxSignal()
        self._grouped: GroupCommit[Commit] = GroupCommit(self._flush)
        self._commit_many = self._d(commit_many_sql())
        self._grouped_create: GroupCommit[builtins.list[Any]] = GroupCommit(self._flush_creates)
        self._create_many = self._d(create_many_sql())

    # -- the saga log --------------------------------------------------------------------

    async def create(
        self, record: SagaRecord, *, data_json: str, owner: str | None,
        lease_until: float | None, waiting: bool = False, messages: Sequence[Any] = (),
        wake_at: float | None = None,
    ) -> None:
        saga = _sql.saga_row(record, data_json, owner, lease_until, waiting, wake_at, _ts)
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
        async with self._connection() as conn:
            if not await conn.fetchval(self._create[many, bool(messages)], *args):
                raise _sql.exists(record.saga_id)
        if messages:
            self.outbox_signal.notify()

    async def _flush_creates(self, rows: builtins.list[builtins.list[Any]]
                             ) -> builtins.list[Outcome]:
        """New sagas that are ready together: one statement; True for each one created."""
        if len(rows) == 1:
            async with self._connection() as conn:
                return [(True, bool(await conn.fetchval(self._create[False, False], *rows[0])))]
        async with self._lane() as conn:
            try:
                created = {r[0] for r in await conn.fetch(self._create_many, batch_json(rows))}
                return [(True, row[0] in created) for row in rows]
            except self._asyncpg.PostgresError:  # one id twice, say: one by one
                return [(True, bool(await conn.fetchval(self._create[False, False], *row)))
                        for row in rows]

    async def load(self, saga_id: str) -> SagaRecord:
        async with self._connection() as conn, self._snapshot(conn):
            row = await conn.fetchrow(self._q["SELECT_SAGA"], saga_id)
            if row is None:
                raise SagaNotFound(saga_id, self.url)
            history = await conn.fetch(self._q["SELECT_HISTORY"], saga_id)
        return _sql.decode(row, history, _ts, self.url)

    async def commit(self, commit: Commit) -> str | None:
        if commit.messages or commit.inbox is not None:
            abort = await self._commit_one(commit)
            if commit.messages:
                self.outbox_signal.notify()
            return abort
        grouped: str | None = await self._grouped(commit, commit.saga_id)
        return grouped

    async def _flush(self, commits: builtins.list[Commit]) -> builtins.list[Outcome]:
        """Plain commits that are ready together: one statement, one transaction."""
        if len(commits) == 1:
            return [(True, await self._commit_one(commits[0]))]
        rows = [(*update, *transition[3:]) for update, transition in
                (_sql.commit_rows(c, _ts) for c in commits)]
        outcomes: builtins.list[Outcome] = []
        async with self._lane() as conn:
            try:
                moved = await conn.fetch(self._commit_many, batch_json(rows))
            except self._asyncpg.PostgresError:  # two writers of one saga, say: one by one
                moved = None
            aborts = {row[0]: row[1] for row in moved or ()}
            for c in commits if moved is not None else ():
                if c.saga_id in aborts:
                    outcomes.append((True, aborts[c.saga_id]))
                    continue
                found = await conn.fetchrow(self._q["SELECT_REVISION"], c.saga_id, None)
                try:
                    _sql.missed(c, found, self.url)
                except SagaError as exc:  # this saga's own conflict
                    outcomes.append((False, exc))
        if moved is None:  # each commit on its own, through the pool: each its own outcome
            for c in commits:
                try:
                    outcomes.append((True, await self._commit_one(c)))
                except Exception as exc:  # handed to that commit's own caller
                    outcomes.append((False, exc))
        return outcomes

    async def _commit_one(self, commit: Commit) -> str | None:
        update, transition = _sql.commit_rows(commit, _ts)
        args = [*update, *transition[3:]]
        if commit.messages:
            args.append([m[1] for m in _sql.message_rows(commit.saga_id, commit.messages, None)])
        if commit.inbox is not None:
            args.append(commit.inbox)
        async with self._connection() as conn:
            try:
                done = await conn.fetchrow(
                    self._commit[bool(commit.messages), commit.inbox is not None], *args)
            except self._asyncpg.UniqueViolationError as exc:
                if exc.constraint_name != "inbox_pkey":
                    raise
                raise _sql.duplicate(commit) from exc
            if done is None:
                found = await conn.fetchrow(self._q["SELECT_REVISION"], commit.saga_id,
                                            commit.inbox)
                _sql.missed(commit, found, self.url)
        abort: str | None = done[0]
        return abort

    async def list(
        self, *, status: SagaStatus | None = None, name: str | None = None,
        limit: int | None = None,
    ) -> list[SagaRecord]:
        sql, params = self._d.listing(status, name, limit)
        async with self._connection() as conn, self._snapshot(conn):
            rows = await conn.fetch(sql, *params)
            history = await self._histories(conn, rows)
        return _sql.decode_all(rows, history, _ts, self.url)

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> builtins.list[Any]:
        """One read statement's rows (for the read side, `_reads_sql.SQLReads`)."""
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *args))

    async def claim(
        self, owner: str, *, now: float, lease: float, limit: int,
        definitions: Sequence[tuple[str, str]] | None = None, saga_id: str | None = None,
    ) -> builtins.list[SagaRecord]:
        candidates, params = self._d.claimable(
            "saga_id, status", now=now, limit=limit, definitions=definitions, saga_id=saga_id,
            lock=" FOR UPDATE SKIP LOCKED")
        sql = self._d(CLAIM.replace("{candidates}", candidates).replace(
            "{owner}", f"${len(params) + 1}").replace("{until}", f"${len(params) + 2}"))
        while True:  # corrupt sagas stay leased (out of the way), logged and skipped
            async with self._connection() as conn:
                rows = sorted(await conn.fetch(sql, *params, owner, now + lease),
                              key=lambda row: (row["created_at"], row["n"]))
                history = await self._histories(conn, rows)
            if saga_id is not None and rows:  # an operator's claim of one saga: corrupt raises
                return [_sql.decode(rows[0], history, _ts, self.url)]
            claimed = _sql.decode_all(rows, history, _ts, self.url)
            if claimed or not rows or lease <= 0:
                return claimed

    async def renew(self, owner: str, saga_ids: Sequence[str], until: float) -> None:
        async with self._connection() as conn:
            await conn.execute(self._q["RENEW"], owner, json.dumps(list(saga_ids)), until)

    async def release(self, owner: str, saga_ids: Sequence[str]) -> None:
        async with self._connection() as conn:
            await conn.execute(self._q["RELEASE"], owner, json.dumps(list(saga_ids)))

    async def request_abort(self, saga_id: str, reason: str) -> None:
        async with self._connection() as conn:
            if await conn.execute(self._q["REQUEST_ABORT"], saga_id, reason) == "UPDATE 0":
                raise SagaNotFound(saga_id, self.url)

    # -- the outbox and participants (choreography) ----------------------------------------

    async def pending_messages(self, limit: int = 100) -> builtins.list[tuple[int, str]]:
        """Outbox messages not yet sent, oldest first: (id, JSON text)."""
        async with self._connection() as conn:
            rows = await conn.fetch(self._q["PENDING_MESSAGES"], limit)
        return [(row[0], row[1]) for row in rows]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        async with self._connection() as conn:
            await conn.execute(self._q["MARK_SENT"], json.dumps(list(ids)), datetime.now(UTC))

    async def participant_state(self, participant: str, key: str) -> dict[str, Any] | None:
        """A participant's state for one saga (None before its first message)."""
        async with self._connection() as conn:
            text = await conn.fetchval(self._q["PARTICIPANT_STATE"], participant, key)
        return None if text is None else _sql.participant_state(text, participant, key,
                                                                 self.url)

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        """Apply a participant's handling of one message atomically; False if a duplicate."""
        state_json = to_json(state, f"{participant}'s state")
        outbox = [m[1] for m in _sql.message_rows(key, messages, None)]
        async with self._connection() as conn:
            applied = await conn.fetchval(self._apply, participant, key, message_id,
                                          datetime.now(UTC), state_json, outbox)
        if applied and outbox:
            self.outbox_signal.notify()
        return bool(applied)

    # -- the pool ------------------------------------------------------------------------

    @property
    def batches(self) -> int:
        """Transactions that carried plain commits (fewer than the commits: grouped)."""
        return self._grouped.batches

    def reopen(self) -> PostgresStore:
        """The same database and schema through a new pool, as a fresh process would open it."""
        return PostgresStore(self.dsn, schema=self.schema, min_size=self.min_size,
                             max_size=self.max_size, connect_timeout=self.connect_timeout)

    async def open(self) -> None:
        """Connect, and create or migrate the schema; `StoreError` if that fails."""
        async with self._opening:
            if self._pool is not None:
                return
            try:
                pool = await self._asyncpg.create_pool(
                    self.dsn, min_size=self.min_size, max_size=self.max_size,
                    timeout=self.connect_timeout, **self._pool_options)
            except self._failures as exc:
                raise StoreError(
                    f"cannot connect to the saga store {self.url} ({type(exc).__name__}: "
                    f"{exc}): check that PostgreSQL runs there and that the URL is right"
                ) from exc
            try:
                async with pool.acquire() as conn:
                    await self._migrate(conn)
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

    async def _migrate(self, conn: Any) -> None:
        async with self._failing(), conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))",
                               f"statesaga:{self.schema}")
            found = 0
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL",
                                   f'"{self.schema}".schema_version'):
                found = await conn.fetchval(self._d("SELECT max(version) FROM {s}schema_version"))
            steps = self._d.migrations(found or 0, self.url)
            if steps:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for sql in steps:
                await conn.execute(sql)

    def _connection(self) -> Borrowed:
        return Borrowed(self)

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
                conn = await self._asyncpg.connect(
                    self.dsn, timeout=self.connect_timeout,
                    server_settings=BY_KEY)
            yield conn
        except BaseException as exc:  # lost, or cancelled mid-statement: not reused
            if conn is not None:
                conn.terminate()
            if isinstance(exc, self._failures):
                raise self._failed(exc) from exc
            raise
        if self._pool is None:  # the store was closed meanwhile
            await conn.close()
        else:
            self._lanes.append(conn)

    @contextlib.asynccontextmanager
    async def _failing(self) -> AsyncIterator[None]:
        try:
            yield
        except self._failures as exc:
            raise self._failed(exc) from exc

    def _failed(self, exc: BaseException) -> StoreError:
        """The driver's error as a `StoreError` naming the store."""
        return StoreError(
            f"the saga store {self.url} failed ({type(exc).__name__}: {exc}); the transaction "
            "was rolled back, so nothing was half-written: fix the cause, then resume the saga")

    @staticmethod
    def _snapshot(conn: Any) -> Any:
        """A read-only transaction that sees one snapshot (a saga and its history agree)."""
        return conn.transaction(isolation="repeatable_read", readonly=True)

    async def _histories(self, conn: Any, rows: Sequence[Any]) -> Any:
        if not rows:
            return []
        ids = json.dumps([row["saga_id"] for row in rows])
        return await conn.fetch(self._q["SELECT_HISTORIES"], ids)
