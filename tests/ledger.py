"""Fake services for the multi-process tests, kept in the saga store's own database.

Every step records its effect by idempotency key (`effects`: a UNIQUE key, written with
INSERT ... ON CONFLICT DO NOTHING, so a retried step never doubles it); its compensation marks
the effect undone (an UPDATE: "nothing to undo" leaves nothing behind). Every execution is
also appended to `calls`, so a test sees re-executions. SQLite: the same file as the store,
other tables; PostgreSQL: the store's schema.

The saga's `data` drives it: `{"fail_at": "c"}` makes step c raise (before doing anything),
`{"delay": 0.01}` makes each step take that long (half before its write, half after);
`{"hostile": kind}` makes step b raise an error, or return a result, that no store can keep
as it is (`chaos.hostile`): the saga is compensated all the same.

Fencing: every call carries the saga's `ctx.fence`; the service keeps the highest fence it
has seen for each saga and refuses (`Fenced`, recorded as outcome "fenced") a call with a
lower one: a worker that stalled past its lease cannot act once another took the saga over.

`violations` checks, from the store and the ledger, what must hold once every saga is done.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
from chaos.hostile import HOSTILE_ERRORS, HOSTILE_RESULTS

from statesaga import SagaRecord, SagaStateMachine, SagaStatus, StepContext, kernel
from statesaga.records import Kind

STEPS = ("a", "b", "c")
IN_DOUBT = ("retry_unknown", "timeout")
ENV = "STATESAGA_TEST_LEDGER"  # the ledger's URL (the store's URL) in a child process

_DDL = (
    """CREATE TABLE {s}effects (
        id {serial} PRIMARY KEY, key TEXT NOT NULL UNIQUE, saga_id TEXT NOT NULL,
        step TEXT NOT NULL, state TEXT NOT NULL)""",
    """CREATE TABLE {s}calls (
        id {serial} PRIMARY KEY, saga_id TEXT NOT NULL, step TEXT NOT NULL,
        kind TEXT NOT NULL, attempt INTEGER NOT NULL, outcome TEXT NOT NULL,
        pid INTEGER NOT NULL, fence INTEGER NOT NULL DEFAULT 0)""",
    "CREATE TABLE {s}fences (saga_id TEXT PRIMARY KEY, fence INTEGER NOT NULL)",
)
# The highest fence seen for the saga, this call's included (one statement: calls of one saga
# are serialized on its row until the call's transaction ends).
_FENCE = ("INSERT INTO {s}fences (saga_id, fence) VALUES ($1, $2) ON CONFLICT (saga_id) "
          "DO UPDATE SET fence = {greatest}({s}fences.fence, excluded.fence) RETURNING fence")
_DO = ("INSERT INTO {s}effects (key, saga_id, step, state) VALUES ($1, $2, $3, 'done') "
       "ON CONFLICT (key) DO NOTHING")
# An undo with nothing to undo leaves a tombstone: a late action with that key is refused,
# as a service that honours compensations does (a cancelled step may still land after it).
# One statement, so that an action committing meanwhile is waited for, then undone.
_UNDO = ("INSERT INTO {s}effects (key, saga_id, step, state) VALUES ($1, $2, $3, 'tombstone') "
         "ON CONFLICT (key) DO UPDATE SET state = 'undone' WHERE {s}effects.state = 'done' "
         "RETURNING state")
_CALL = ("INSERT INTO {s}calls (saga_id, step, kind, attempt, outcome, pid, fence) "
         "VALUES ($1, $2, $3, $4, $5, $6, $7)")
_EFFECTS = "SELECT saga_id, step, state FROM {s}effects ORDER BY id"
_CALLS = "SELECT saga_id, step, kind, attempt, outcome, pid, fence FROM {s}calls ORDER BY id"


@attrs.frozen
class Call:
    saga_id: str
    step: str
    kind: str  # "do" or "undo"
    attempt: int
    outcome: str  # do: "done", "raised" or "refused" (undone before); undo: "undone", "nothing"
    pid: int  # both: "fenced" (a higher fence was seen: refused)
    fence: int = 0


class Fenced(RuntimeError):
    """The service saw a higher fence for this saga: the caller lost it to another worker."""


class SQLiteLedger:
    """The ledger in the store's SQLite file; each call is one (short) transaction."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _sql(self, template: str) -> str:
        return template.format(s="", serial="INTEGER", greatest="max").replace("$", "?")

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode = WAL").fetchall()
            self._conn.execute("PRAGMA synchronous = NORMAL")
        return self._conn

    def _transaction(self, *statements: tuple[str, tuple[Any, ...]]) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, args in statements:
                conn.execute(self._sql(sql), args)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def open(self) -> None:
        self._connection()

    async def create(self) -> None:
        conn = self._connection()
        for sql in _DDL:
            conn.execute(self._sql(sql))

    async def do(self, ctx: StepContext, outcome: str) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._fenced(conn, ctx):
                outcome = "fenced"
            elif outcome != "raised" and not conn.execute(self._sql(_DO), (
                    ctx.idempotency_key, ctx.saga_id, ctx.step)).rowcount:
                outcome = _refused_or_done(conn.execute(
                    "SELECT state FROM effects WHERE key = ?", (ctx.idempotency_key,)
                ).fetchone()[0])
            conn.execute(self._sql(_CALL), (ctx.saga_id, ctx.step, "do", ctx.attempt, outcome,
                                            os.getpid(), ctx.fence))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _raise_if_fenced(outcome, ctx)

    def _fenced(self, conn: sqlite3.Connection, ctx: StepContext) -> bool:
        seen = conn.execute(self._sql(_FENCE), (ctx.saga_id, ctx.fence)).fetchone()[0]
        return bool(seen > ctx.fence)

    async def undo(self, ctx: StepContext) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._fenced(conn, ctx):
                outcome = "fenced"
            else:
                row = conn.execute(self._sql(_UNDO), (ctx.idempotency_key, ctx.saga_id,
                                                      ctx.step)).fetchone()
                outcome = "undone" if row is not None and row[0] == "undone" else "nothing"
            conn.execute(self._sql(_CALL), (ctx.saga_id, ctx.step, "undo", ctx.attempt,
                                            outcome, os.getpid(), ctx.fence))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        _raise_if_fenced(outcome, ctx)

    async def read(self) -> tuple[list[tuple[Any, ...]], list[Call]]:
        conn = self._connection()
        effects = [tuple(row) for row in conn.execute(self._sql(_EFFECTS))]
        calls = [Call(*row) for row in conn.execute(self._sql(_CALLS))]
        return effects, calls

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class PostgresLedger:
    """The ledger in the store's PostgreSQL schema, over a small asyncpg pool."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self._pool: Any = None
        self._opening = asyncio.Lock()

    def _sql(self, template: str) -> str:
        return template.format(s=f'"{self.schema}".', greatest="GREATEST",
                               serial="BIGINT GENERATED ALWAYS AS IDENTITY")

    async def _connections(self) -> Any:
        async with self._opening:
            if self._pool is None:
                import asyncpg

                self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        return self._pool

    async def open(self) -> None:
        await self._connections()

    async def create(self) -> None:
        pool = await self._connections()
        async with pool.acquire() as conn:
            await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            for sql in _DDL:
                await conn.execute(self._sql(sql))

    async def do(self, ctx: StepContext, outcome: str) -> None:
        pool = await self._connections()
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(self._sql(_FENCE), ctx.saga_id, ctx.fence) > ctx.fence:
                outcome = "fenced"
            elif outcome != "raised" and await conn.execute(
                    self._sql(_DO), ctx.idempotency_key, ctx.saga_id, ctx.step) == "INSERT 0 0":
                outcome = _refused_or_done(await conn.fetchval(self._sql(
                    "SELECT state FROM {s}effects WHERE key = $1"), ctx.idempotency_key))
            await conn.execute(self._sql(_CALL), ctx.saga_id, ctx.step, "do", ctx.attempt,
                               outcome, os.getpid(), ctx.fence)
        _raise_if_fenced(outcome, ctx)

    async def undo(self, ctx: StepContext) -> None:
        pool = await self._connections()
        async with pool.acquire() as conn, conn.transaction():
            if await conn.fetchval(self._sql(_FENCE), ctx.saga_id, ctx.fence) > ctx.fence:
                outcome = "fenced"
            else:
                state = await conn.fetchval(self._sql(_UNDO), ctx.idempotency_key,
                                            ctx.saga_id, ctx.step)
                outcome = "undone" if state == "undone" else "nothing"
            await conn.execute(self._sql(_CALL), ctx.saga_id, ctx.step, "undo", ctx.attempt,
                               outcome, os.getpid(), ctx.fence)
        _raise_if_fenced(outcome, ctx)

    async def read(self) -> tuple[list[tuple[Any, ...]], list[Call]]:
        pool = await self._connections()
        async with pool.acquire() as conn:
            effects = [tuple(row) for row in await conn.fetch(self._sql(_EFFECTS))]
            calls = [Call(*row) for row in await conn.fetch(self._sql(_CALLS))]
        return effects, calls

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None


Ledger = SQLiteLedger | PostgresLedger


def _raise_if_fenced(outcome: str, ctx: StepContext) -> None:
    if outcome == "fenced":
        raise Fenced(f"saga {ctx.saga_id}: fence {ctx.fence} is lower than one seen before")


def _refused_or_done(state: str) -> str:
    """What a repeated action came to: refused after an undo, or a no-op (done before)."""
    return "refused" if state in ("tombstone", "undone") else "done"


def open_ledger(url: str) -> Ledger:
    """The ledger in the database of the store `url` (sqlite:///... or postgresql://...)."""
    if url.startswith("sqlite:///"):
        return SQLiteLedger(url[len("sqlite:///"):].partition("?")[0])
    parts = urlsplit(url)
    args = parse_qsl(parts.query)
    schema = next((v for k, v in args if k == "schema"), "statesaga")
    dsn = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in args if k != "schema"])))
    return PostgresLedger(dsn, schema)


_current: Ledger | None = None


async def new_ledger(url: str) -> None:
    """Create the ledger's tables in the store at `url`."""
    ledger = open_ledger(url)
    try:
        await ledger.create()
    finally:
        await ledger.close()


def ledger() -> Ledger:
    """This process's ledger, opened on first use from $STATESAGA_TEST_LEDGER."""
    global _current
    if _current is None:
        _current = open_ledger(os.environ[ENV])
    return _current


def _action(step: str) -> Any:
    async def act(ctx: StepContext) -> dict[str, Any]:
        delay = float(ctx.data.get("delay", 0)) / 2
        await asyncio.sleep(delay)
        hostile = ctx.data.get("hostile") if step == "b" else None
        if ctx.data.get("fail_at") == step or hostile in HOSTILE_ERRORS:
            await ledger().do(ctx, "raised")
            if hostile in HOSTILE_ERRORS:
                raise HOSTILE_ERRORS[hostile]()
            raise RuntimeError(f"step {step} refused saga {ctx.saga_id}")
        await ledger().do(ctx, "done")
        await asyncio.sleep(delay)
        if hostile in HOSTILE_RESULTS:
            return HOSTILE_RESULTS[hostile]()
        return {"key": ctx.idempotency_key}

    act.__qualname__ = f"ledger.do_{step}"
    return act


def _compensation(step: str) -> Any:
    async def undo(ctx: StepContext) -> None:
        await asyncio.sleep(float(ctx.data.get("delay", 0)) / 2)
        await ledger().undo(ctx)

    undo.__qualname__ = f"ledger.undo_{step}"
    return undo


def build_machine(name: str, *, parallel: bool = False) -> SagaStateMachine:
    """Steps a, b, c, each recorded in the ledger and compensated there (`parallel`: b and
    c at once, as the branches of group `bc`)."""
    machine = SagaStateMachine(name)
    machine.step("a", _action("a"), compensation=_compensation("a"))
    with machine.parallel("bc") if parallel else contextlib.nullcontext():
        for step in STEPS[1:]:
            machine.step(step, _action(step), compensation=_compensation(step))
    return machine


def in_doubt(record: SagaRecord, machine: SagaStateMachine | None) -> set[str]:
    """The steps whose outcome the history leaves in doubt: retried or timed out unknown, or
    (a group that failed) branches still running then, cancelled and so undone too."""
    doubt = {t.step for t in record.history if t.event in IN_DOUBT}
    if machine is None:
        return {s for s in doubt if s is not None}
    graph = machine.graph
    pos = kernel.start(graph).after
    for t in record.history[1:]:
        if t.kind in (Kind.FAILURE, Kind.UNKNOWN) and pos.state in graph.lanes:
            doubt |= {x.name for x in pos.lanes if x.status == kernel.LANE_RUNNING}
        pos = kernel.advance(graph, pos, t.event, t.kind, t.dest, t.error, lane=t.step).after
    return {s for s in doubt if s is not None}


def expected_status(data: dict[str, Any]) -> SagaStatus:
    return (SagaStatus.COMPENSATED if data.get("fail_at") or data.get("hostile")
            else SagaStatus.COMPLETED)


def violations(records: Sequence[SagaRecord], effects: Sequence[tuple[Any, ...]],
               calls: Sequence[Call], machine: SagaStateMachine | None = None) -> list[str]:
    """What is wrong with the outside world, given each saga's history; [] when all is well.

    Every saga ended as its data says (completed, or compensated when a step fails); a
    completed saga's effects exist exactly once, a compensated saga's were undone exactly
    once; a step was re-executed, or compensated without having run, only when its outcome
    was in doubt per the history (`retry_unknown` / `timeout`); a compensation with nothing
    to undo left nothing behind.
    """
    out: list[str] = []
    effects = [e for e in effects if e[2] != "tombstone"]  # an undo that found nothing
    effect_count = Counter((saga_id, step) for saga_id, step, _ in effects)
    state = {(saga_id, step): s for saga_id, step, s in effects}
    by_saga: dict[str, list[Call]] = {}
    for call in calls:
        by_saga.setdefault(call.saga_id, []).append(call)
    known = {r.saga_id for r in records}
    for saga_id in sorted(set(by_saga) - known):
        out.append(f"{saga_id}: steps ran, but the saga is not in the store")
    for r in records:
        mine = by_saga.get(r.saga_id, [])
        where = f"{r.saga_id} ({r.state})"
        expected = expected_status(dict(r.data))
        if r.status is not expected:
            out.append(f"{where}: expected {expected.value}, ended {r.status.value} "
                       f"({r.error})")
        doubt = in_doubt(r, machine)
        done = Counter(c.step for c in mine if c.kind == "do" and c.outcome == "done")
        tried = Counter(c.step for c in mine if c.kind == "do")
        undone = Counter(c.step for c in mine if c.kind == "undo" and c.outcome == "undone")
        undo_calls = Counter(c.step for c in mine if c.kind == "undo")
        have = {step for (s, step) in effect_count if s == r.saga_id}
        for step in STEPS:
            if effect_count[r.saga_id, step] > 1:
                out.append(f"{where}: the effect of {step} exists "
                           f"{effect_count[r.saga_id, step]} times")
            if tried[step] > 1 and step not in doubt:
                out.append(f"{where}: {step} ran {tried[step]} times, but its outcome was "
                           "never in doubt")
            if undo_calls[step] and not done[step] and step not in doubt:
                out.append(f"{where}: {step} was compensated, but it never ran and its "
                           "outcome was never in doubt")
        if have != set(done):
            out.append(f"{where}: effects of {sorted(have)}, but steps {sorted(done)} did them")
        if r.status is SagaStatus.COMPLETED:
            if {(step, "done") for step in STEPS} != {(s, state[r.saga_id, s]) for s in have}:
                out.append(f"{where}: completed with effects "
                           f"{ {s: state[r.saga_id, s] for s in have} }")
            if undo_calls:
                out.append(f"{where}: completed, but compensated {sorted(undo_calls)}")
        elif r.status is SagaStatus.COMPENSATED:
            left = sorted(s for s in have if state[r.saga_id, s] != "undone")
            if left:
                out.append(f"{where}: compensated, but the effects of {left} remain")
            for step in sorted(have):
                if undone[step] != 1:
                    out.append(f"{where}: the effect of {step} was undone {undone[step]} "
                               "times, not once")
    return out
