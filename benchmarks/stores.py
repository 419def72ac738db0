"""The durable saga log against the raw commits it needs, on SQLite and PostgreSQL (4-step saga).

Also: worker processes on PostgreSQL, `recover()` of 10,000 sagas, and DBOS Transact as a peer.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from statesaga import InMemoryStore, Orchestrator, PostgresStore, SQLiteStore
from statesaga.stores._group import GroupCommit

from ._db import (
    DSN,
    FLIGHT,
    RUN_SECONDS,
    RUNS,
    met,
    pg_count,
    pg_version,
    rate,
    schema,
    sqlite_count,
)
from ._peer import dbos_lines
from ._raw import (
    PostgresFloor,
    PostgresStatements,
    Replay,
    SQLiteFloor,
    SQLiteStatements,
    keep_session,
)
from ._scale import RECOVER, WORKER_SAGAS, WORKERS, recover_lines, workers_lines
from .core import STEPS, definition

SAGAS = (200, 2000)  # sagas per run: at least this many and at most that many


def transactions(store: Any) -> int:
    """The transactions the store's group commit wrote so far (several writes each, grouped)."""
    return sum(g.batches for g in vars(store).values() if isinstance(g, GroupCommit))


class Writes:
    """Counts the store's writing calls (each one transaction) and the time spent in them."""

    def __init__(self, store: Any) -> None:
        self.calls = 0
        self.seconds = 0.0
        for name in ("create", "commit", "claim", "renew", "release"):
            setattr(store, name, self._counted(getattr(store, name)))

    def _counted(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def counted(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return await method(*args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - start
        return counted


class Stalls:
    """The longest the event loop was late for a 1 ms timer (ms): how long a write held it."""

    def __init__(self) -> None:
        self.longest = 0.0

    @asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        async def tick() -> None:
            while True:
                start = time.perf_counter()
                await asyncio.sleep(0.001)
                self.longest = max(self.longest, (time.perf_counter() - start - 0.001) * 1e3)

        ticker = asyncio.ensure_future(tick())
        try:
            yield
        finally:
            ticker.cancel()


class Compared:
    """One database's runs: the floor and statesaga, sequential ("1") and in flight ("n")."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.runs: dict[str, list[float]] = defaultdict(list)
        self.rows_per_saga = 0.0
        self.n = 0

    def __getitem__(self, key: str) -> float:
        """The median of the runs of `key` ("floor 1", "saga n", "cpu saga 1", "ratio n"...)."""
        return statistics.median(self.runs[key])

    def add(self, key: str, floor: tuple[float, float], saga: tuple[float, float]) -> None:
        """A floor run and the statesaga run right after it (their ratio cancels load drift)."""
        for name, (per_second, cpu) in (("floor", floor), ("saga", saga)):
            self.runs[f"{name} {key}"].append(per_second)
            self.runs[f"cpu {name} {key}"].append(cpu)
        self.runs[f"ratio {key}"].append(saga[0] / floor[0])


async def compare(label: str, floor: Callable[[], Awaitable[None]], store: Any,
                  statements: Replay, rows: Callable[[], Awaitable[tuple[int, int]]],
                  wal: Callable[[], Awaitable[int]] | None = None) -> Compared:
    """Alternate floor and statesaga runs, sequential then `FLIGHT` in flight, RUNS times;
    sequentially, also statesaga's statements alone (`statements`, its setup done).

    `wal`: the database's WAL position in bytes, to tell what a sequential saga writes."""
    out = Compared(label)
    machine = definition()
    writes = Writes(store)
    orch = Orchestrator(store=store)

    async def saga() -> None:
        await orch.run(machine)

    statements.prepare(10)
    for _ in range(10):  # warm up: files, schemas, prepared statements
        await floor()
        await saga()
        await statements.saga()
    probe, _ = await rate(saga, 20, 1)
    out.n = n = min(max(int(probe * RUN_SECONDS), SAGAS[0]), SAGAS[1])
    for _ in range(RUNS):
        for key, flight in (("1", 1), ("n", FLIGHT)):
            at = await wal() if wal and key == "1" else 0
            floor_run = await rate(floor, n, flight)
            middle = await wal() if wal and key == "1" else 0
            calls, seconds, batches = writes.calls, writes.seconds, transactions(store)
            stalls = Stalls()
            async with stalls.watching():
                saga_run = await rate(saga, n, flight)
            out.add(key, floor_run, saga_run)
            out.runs[f"stall {key}"].append(stalls.longest)
            if key == "1":
                statements.prepare(n)
                out.runs["statements 1"].append((await rate(statements.saga, n, 1))[0])
            if wal and key == "1":
                out.runs["wal floor"].append((middle - at) / n)
                out.runs["wal saga"].append((await wal() - middle) / n)
            out.runs[f"writes {key}"].append((writes.calls - calls) / n)
            out.runs[f"transactions {key}"].append((transactions(store) - batches) / n)
            out.runs[f"in store {key}"].append((writes.seconds - seconds) / n)
    await store.close()
    transitions, counted = await rows()
    out.rows_per_saga = transitions / counted
    return out


async def compare_sqlite(directory: str, durability: str,
                         writer_thread: bool = False) -> Compared:
    name = f"{durability}-{writer_thread}"
    floor = SQLiteFloor(os.path.join(directory, f"floor-{name}.db"), durability)
    path = os.path.join(directory, f"statesaga-{name}.db")
    store = SQLiteStore(path, durability=durability, writer_thread=writer_thread)
    where = ", writer_thread=True" if writer_thread else ""

    async def rows() -> tuple[int, int]:
        return (sqlite_count(path, "SELECT count(*) FROM transitions"),
                sqlite_count(path, "SELECT count(*) FROM sagas"))

    statements = SQLiteStatements(os.path.join(directory, f"replay-{name}.db"), durability)
    await statements.setup()
    try:
        return await compare(f"SQLite WAL, synchronous={durability.upper()}{where}",
                             floor.saga, store, statements, rows)
    finally:
        floor.conn.close()
        statements.close()


async def compare_postgres() -> Compared:
    async with schema("floor") as floor_schema, schema("saga") as saga_schema, \
            schema("replay") as replay_schema:
        pool = await asyncpg.create_pool(DSN, min_size=FLIGHT, max_size=FLIGHT,
                                         reset=keep_session)
        try:
            await pool.execute(f'CREATE SCHEMA "{floor_schema}"; CREATE TABLE "{floor_schema}"'
                               ".log (saga_id TEXT NOT NULL, seq INTEGER NOT NULL, at FLOAT8 "
                               "NOT NULL, state TEXT NOT NULL, PRIMARY KEY (saga_id, seq))")

            async def rows() -> tuple[int, int]:
                return (await pg_count(saga_schema, "SELECT count(*) FROM {s}transitions"),
                        await pg_count(saga_schema, "SELECT count(*) FROM {s}sagas"))

            async def wal() -> int:
                return int(await pool.fetchval(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"))

            store = PostgresStore(DSN, schema=saga_schema, max_size=FLIGHT)
            statements = PostgresStatements(pool, replay_schema)
            await statements.setup(DSN)
            return await compare(f"{await pg_version()} (asyncpg)",
                                 PostgresFloor(pool, floor_schema).saga, store, statements,
                                 rows, wal)
        finally:
            await pool.close()


def compared_lines(results: list[Compared]) -> list[str]:
    lines = [
        "| database | sagas | per run | floor, sagas/s | statesaga, sagas/s | ratio | target | "
        "store writes per step | transactions per step |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    modes = (("1", "sequential", 0.75), ("n", f"{FLIGHT} in flight", 1.0))
    for r in results:
        for key, how, target in modes:
            lines.append(
                f"| {r.label} | {how} | {r.n:,} | {r[f'floor {key}']:,.0f} | "
                f"{r[f'saga {key}']:,.0f} | {r[f'ratio {key}']:.2f} | ≥ {target:.2f}: "
                f"{met(r[f'ratio {key}'] >= target)} | {r[f'writes {key}'] / STEPS:.2f} | "
                f"{r[f'transactions {key}'] / STEPS:.2f} |")
    lines += [
        "",
        "The ceiling of any code on statesaga's schema and statements, sequentially: the "
        "driver calls one real `run()` made (recorded at the driver), replayed with fresh saga "
        "ids from a bare loop, their arguments built beforehand, so no statesaga code runs "
        f"while the clock does. It needs {1 + STEPS} commits per saga where the floor needs "
        f"{STEPS}, so its ratio is at most {STEPS / (1 + STEPS):.2f} before any other cost:",
        "",
        "| database | floor, sagas/s | statements alone, sagas/s | ratio | statesaga, "
        "sagas/s | ratio | statesaga / statements alone |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(f"| {r.label} | {r['floor 1']:,.0f} | {r['statements 1']:,.0f} | "
          f"{r['statements 1'] / r['floor 1']:.2f} | {r['saga 1']:,.0f} | {r['ratio 1']:.2f} | "
          f"{r['saga 1'] / r['statements 1']:.2f} |" for r in results),
        "",
        "Where the time goes, µs per saga: wall time (sequential: also the part spent inside "
        "the store's calls, the rest being the orchestrator and the steps) and this process's "
        "CPU time (its share of one core in brackets; the database's own CPU is not in it):",
        "",
        "| database | sagas | floor, wall | statesaga, wall | in the store | floor, CPU | "
        "statesaga, CPU | transitions rows per saga |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for key, how, _ in modes:
            cpu = {name: f"{r[f'cpu {name} {key}'] * 1e6:,.0f} "
                         f"({r[f'cpu {name} {key}'] * r[f'{name} {key}']:.0%})"
                   for name in ("floor", "saga")}
            store = f"{r['in store 1'] * 1e6:,.0f}" if key == "1" else "(overlapping)"
            lines.append(f"| {r.label} | {how} | {1e6 / r[f'floor {key}']:,.0f} | "
                         f"{1e6 / r[f'saga {key}']:,.0f} | {store} | {cpu['floor']} | "
                         f"{cpu['saga']} | {r.rows_per_saga:.2f} |")
    lines += [
        "",
        "How long the event loop stood still: the longest a 1 ms timer was late while "
        "statesaga ran (median of the runs, ms; a write on the loop holds it for its fsync):",
        "",
        "| database | sequential | " + f"{FLIGHT} in flight |",
        "|---|---:|---:|",
        *(f"| {r.label} | {r['stall 1']:,.1f} | {r['stall n']:,.1f} |" for r in results),
    ]
    for r in results:
        if r.runs["wal saga"]:
            lines += ["", f"{r.label}: WAL written per saga, sequential: floor "
                      f"{r['wal floor']:,.0f} bytes, statesaga {r['wal saga']:,.0f} bytes (the "
                      "server's whole WAL: other sessions' writes meanwhile count too)."]
    return lines


async def no_database() -> dict[str, float]:
    """Sagas per second on `InMemoryStore`, sequential ("1") and in flight ("n"): the
    toolkit's own work, the most any store could reach (median of RUNS)."""
    orch, machine = Orchestrator(store=InMemoryStore()), definition()

    async def saga() -> None:
        await orch.run(machine)

    await rate(saga, 200, 1)
    runs: dict[str, list[float]] = defaultdict(list)
    for _ in range(RUNS):
        for key, flight in (("1", 1), ("n", FLIGHT)):
            runs[key].append((await rate(saga, 2000, flight))[0])
    return {key: statistics.median(values) for key, values in runs.items()}


def no_database_lines(alone: dict[str, float], normal: Compared) -> list[str]:
    return ["", f"For scale, the same saga on `InMemoryStore` (no database at all): "
            f"{alone['1']:,.0f} sagas/s sequential and {alone['n']:,.0f} with {FLIGHT} in "
            f"flight, i.e. {alone['1'] / normal['floor 1']:.2f} and "
            f"{alone['n'] / normal['floor n']:.2f} times the synchronous=NORMAL floor measured "
            "above: the orchestrator's own work per saga takes "
            f"{normal['floor 1'] / alone['1']:.0%} of the time that floor takes for a saga's "
            "four commits, before any store work."]


async def run() -> list[str]:
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="statesaga-bench-") as directory:
        compared = [await compare_sqlite(directory, "full"),
                    await compare_sqlite(directory, "full", writer_thread=True),
                    await compare_sqlite(directory, "normal"), await compare_postgres()]
        alone = await no_database()
        ours = dict(zip(("full", "full, writer thread", "normal", "postgres"), compared,
                        strict=True))
        work = await workers_lines()
        recovery = await recover_lines(directory)
        peer = await dbos_lines(directory, ours)
    return [
        "## Stores: the durable saga log (4-step saga, no-op steps and compensations)",
        "",
        "Floor: one INSERT committed per step through the same driver (SQLite: stdlib "
        "`sqlite3`, WAL, a fresh file in a temp dir, one connection; PostgreSQL: `asyncpg`, a "
        f"fresh schema, a pool of {FLIGHT}). statesaga: `await Orchestrator(store).run(machine)`"
        f" on the same database and durability (`PostgresStore(..., max_size={FLIGHT})`). "
        f"Sequential: one saga after another; {FLIGHT} in flight: {FLIGHT} coroutines taking "
        "the next saga as they finish (on SQLite they share one connection, so the floor's "
        "commits are serialized; statesaga's writes that are ready together share one "
        "transaction on both databases, its group commit). SQLite FULL twice in the same "
        "run: writes on the event loop (the default), and with `writer_thread=True` (grouped "
        "writes in a writer thread). Store writes per step: the "
        "store's `create`, `commit`, `claim`, `renew` and `release` calls (each a transaction "
        "of its own, or its share of a grouped one), counted by "
        f"wrapping them, divided by {STEPS} steps per saga; the target is one commit per step, "
        f"i.e. (1 create + {STEPS} commits) / {STEPS} = {(1 + STEPS) / STEPS:.2f}. "
        "Transactions per step: the transactions those writes took (group commit's batches), "
        "per step; the floor's is 1.00.",
        "",
        *compared_lines(compared),
        *no_database_lines(alone, ours["normal"]),
        "",
        f"### {len(WORKERS)} worker setups on PostgreSQL",
        "",
        f"{WORKER_SAGAS:,} sagas persisted with `start()`, then N child processes "
        "(`benchmarks/_worker.py`) each running `Orchestrator(store=PostgresStore(...), "
        f"sagas=[machine]).work(concurrency={FLIGHT})` (the store's default pool of 10: 4 "
        f"workers of {FLIGHT} would take 64 of the server's 100 connections); the clock runs "
        "from \"go\" (the workers started and connected) until no saga is unfinished. One run "
        "each.",
        "",
        *work,
        "",
        f"### `recover()` of {RECOVER:,} unfinished sagas",
        "",
        f"{RECOVER:,} sagas persisted (pending) with `start()`, then "
        "`await Orchestrator(store=<the store reopened>, sagas=[machine]).recover()` (its "
        "defaults: 64 at a time, claimed 500 at a time) runs them all to completion. One run.",
        "",
        *recovery,
        "",
        "### The peer: DBOS Transact",
        "",
        *peer,
        "",
        f"Load average (1 min) at the start of this suite: {load:.2f}, at its end: "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores; PostgreSQL runs on the same machine).",
    ]
