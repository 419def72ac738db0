"""The durable saga log against the raw commits it needs, on SQLite and PostgreSQL (4-step saga).

Also: worker processes on PostgreSQL, `recover()` of 10,000 sagas, and DBOS Transact as a peer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from statesaga import InMemoryStore, Orchestrator, PostgresStore, SagaStateMachine, SQLiteStore
from statesaga.stores._group import GroupCommit

from .core import STEPS, definition, noop

DSN = os.environ.get("STATESAGA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
FLIGHT = 16  # sagas in flight in the concurrent runs (and the PostgreSQL pools' size)
RUNS = 5  # each figure is the median of RUNS runs; floor and statesaga runs alternate
RUN_SECONDS = 0.6  # sagas per run: as many as statesaga runs in about this long, sequentially
SAGAS = (200, 2000)  # ... but at least this many and at most that many
WORKERS = (1, 2, 4)
WORKER_SAGAS = 2000
RECOVER = 10_000
RECOVER_TARGET = 10.0  # seconds
HERE = Path(__file__).resolve().parent
DBOS_VENV = HERE / ".dbos-venv"
UNFINISHED = "status IN ('pending', 'running', 'compensating')"


async def rate(one: Callable[[], Awaitable[Any]], n: int, flight: int) -> tuple[float, float]:
    """(sagas per second, this process's CPU seconds per saga) running `one` n times, `flight`
    at a time (1: one after another)."""
    left = n

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await one()

    cpu, start = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(flight)))
    return n / (time.perf_counter() - start), (time.process_time() - cpu) / n


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


# -- the floor: one INSERT committed per step, through the same driver ----------------------

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


async def _keep_session(conn: Any) -> None:
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


@asynccontextmanager
async def schema(name: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema (statesaga_bench_<name>_<pid>), dropped afterwards."""
    schema = f"statesaga_bench_{name}_{os.getpid()}"
    conn = await asyncpg.connect(DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        yield schema
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()


async def pg_count(schema: str, sql: str) -> int:
    conn = await asyncpg.connect(DSN)
    try:
        return int(await conn.fetchval(sql.format(s=f'"{schema}".')))
    finally:
        await conn.close()


def sqlite_count(path: str, sql: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(sql.format(s="")).fetchone()[0])


# -- 1-3: statesaga against the floor ---------------------------------------------------------

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
                  rows: Callable[[], Awaitable[tuple[int, int]]],
                  wal: Callable[[], Awaitable[int]] | None = None) -> Compared:
    """Alternate floor and statesaga runs, sequential then `FLIGHT` in flight, RUNS times.

    `wal`: the database's WAL position in bytes, to tell what a sequential saga writes."""
    out = Compared(label)
    machine = definition()
    writes = Writes(store)
    orch = Orchestrator(store=store)

    async def saga() -> None:
        await orch.run(machine)

    for _ in range(10):  # warm up: files, schemas, prepared statements
        await floor()
        await saga()
    probe, _ = await rate(saga, 20, 1)
    out.n = n = min(max(int(probe * RUN_SECONDS), SAGAS[0]), SAGAS[1])
    for _ in range(RUNS):
        for key, flight in (("1", 1), ("n", FLIGHT)):
            at = await wal() if wal and key == "1" else 0
            floor_run = await rate(floor, n, flight)
            middle = await wal() if wal and key == "1" else 0
            calls, seconds, batches = writes.calls, writes.seconds, transactions(store)
            out.add(key, floor_run, await rate(saga, n, flight))
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


async def compare_sqlite(directory: str, durability: str) -> Compared:
    floor = SQLiteFloor(os.path.join(directory, f"floor-{durability}.db"), durability)
    path = os.path.join(directory, f"statesaga-{durability}.db")

    async def rows() -> tuple[int, int]:
        return (sqlite_count(path, "SELECT count(*) FROM transitions"),
                sqlite_count(path, "SELECT count(*) FROM sagas"))

    try:
        return await compare(f"SQLite WAL, synchronous={durability.upper()}", floor.saga,
                             SQLiteStore(path, durability=durability), rows)
    finally:
        floor.conn.close()


async def pg_version() -> str:
    conn = await asyncpg.connect(DSN)
    try:
        return f"PostgreSQL {conn.get_server_version().major}"
    finally:
        await conn.close()


async def compare_postgres() -> Compared:
    async with schema("floor") as floor_schema, schema("saga") as saga_schema:
        pool = await asyncpg.create_pool(DSN, min_size=FLIGHT, max_size=FLIGHT,
                                         reset=_keep_session)
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
            return await compare(f"{await pg_version()} (asyncpg)",
                                 PostgresFloor(pool, floor_schema).saga, store, rows, wal)
        finally:
            await pool.close()


def _met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"


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
                f"{_met(r[f'ratio {key}'] >= target)} | {r[f'writes {key}'] / STEPS:.2f} | "
                f"{r[f'transactions {key}'] / STEPS:.2f} |")
    lines += [
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
    for r in results:
        if r.runs["wal saga"]:
            lines += ["", f"{r.label}: WAL written per saga, sequential: floor "
                      f"{r['wal floor']:,.0f} bytes, statesaga {r['wal saga']:,.0f} bytes (the "
                      "server's whole WAL: other sessions' writes meanwhile count too)."]
    return lines


# -- 4: worker processes on PostgreSQL -----------------------------------------------------

async def start_many(orch: Orchestrator, machine: SagaStateMachine, n: int) -> float:
    """Persist n pending sagas with `start()`, FLIGHT at a time; returns the seconds it took."""
    return n / (await rate(lambda: orch.start(machine), n, FLIGHT))[0]


async def workers(count: int, n: int) -> tuple[float, list[int]]:
    """Seconds for `count` worker processes to finish n started sagas, and what each drove."""
    async with schema(f"work{count}") as name:
        store = PostgresStore(DSN, schema=name, max_size=FLIGHT)
        await start_many(Orchestrator(store=store), definition(), n)
        await store.close()
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks._worker", DSN, name, str(FLIGHT),
            cwd=HERE.parent, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            for _ in range(count)]
        try:
            for p in procs:
                assert p.stdout is not None
                if (await asyncio.wait_for(p.stdout.readline(), 60)).strip() != b"ready":
                    raise RuntimeError("a worker did not start: see its stderr above")
            conn = await asyncpg.connect(DSN)
            try:
                count_left = f'SELECT count(*) FROM "{name}".sagas WHERE {UNFINISHED}'
                start = time.perf_counter()
                for p in procs:
                    assert p.stdin is not None
                    p.stdin.write(b"go\n")
                while await conn.fetchval(count_left):
                    if any(p.returncode is not None for p in procs):
                        raise RuntimeError("a worker exited early: see its stderr above")
                    if time.perf_counter() - start > 300:
                        raise RuntimeError("the workers did not finish in 300 s")
                    await asyncio.sleep(0.01)
                seconds = time.perf_counter() - start
                done = await conn.fetchval(
                    f"SELECT count(*) FROM \"{name}\".sagas WHERE status = 'completed'")
            finally:
                await conn.close()
            driven = []
            for p in procs:
                assert p.stdin is not None
                assert p.stdout is not None
                p.stdin.write(b"stop\n")
                p.stdin.close()
                driven.append(json.loads(await asyncio.wait_for(p.stdout.readline(), 60))[
                    "driven"])
                await p.wait()
        finally:
            for p in procs:
                if p.returncode is None:
                    p.kill()
                    await p.wait()
        if done != n:
            raise RuntimeError(f"{count} workers completed {done} of {n} sagas")
        return seconds, driven


async def workers_lines() -> list[str]:
    lines = [
        f"| worker processes (`work(concurrency={FLIGHT})`) | sagas | seconds | sagas/s | "
        "vs 1 worker | driven by each |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    one = 0.0
    for count in WORKERS:
        seconds, driven = await workers(count, WORKER_SAGAS)
        per_second = WORKER_SAGAS / seconds
        one = one or per_second
        lines.append(f"| {count} | {WORKER_SAGAS:,} | {seconds:.2f} | {per_second:,.0f} | "
                     f"{per_second / one:.2f} | {', '.join(map(str, driven))} |")
    return lines


# -- 5: recover() of 10,000 unfinished sagas -----------------------------------------------

async def recover(store: Any, fresh: Callable[[], Any]) -> tuple[float, float, int]:
    """(seconds to `start()` RECOVER sagas, seconds for a fresh orchestrator's `recover()`,
    how many it recovered)."""
    machine = definition()
    started = await start_many(Orchestrator(store=store), machine, RECOVER)
    await store.close()
    store = fresh()
    start = time.perf_counter()
    report = await Orchestrator(store=store, sagas=[machine]).recover()
    seconds = time.perf_counter() - start
    await store.close()
    return started, seconds, len(report)


async def recover_lines(directory: str) -> list[str]:
    path = os.path.join(directory, "recover.db")
    rows = [("SQLite WAL, synchronous=NORMAL", *await recover(
        SQLiteStore(path, durability="normal"), lambda: SQLiteStore(path, durability="normal")))]
    async with schema("recover") as name:
        rows.append((f"{await pg_version()}, the store's default pool (10)", *await recover(
            PostgresStore(DSN, schema=name, max_size=FLIGHT),
            lambda: PostgresStore(DSN, schema=name))))
    lines = [
        f"| store | `start()` {RECOVER:,} sagas ({FLIGHT} in flight), s | `recover()`, s | "
        f"recovered | sagas/s | target < {RECOVER_TARGET:.0f} s |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for label, started, seconds, recovered in rows:
        lines.append(f"| {label} | {started:.1f} | {seconds:.1f} | {recovered:,} | "
                     f"{recovered / seconds:,.0f} | "
                     f"{_met(seconds < RECOVER_TARGET and recovered == RECOVER)} |")
    return lines


# -- 6: the peer, DBOS Transact, in its own virtualenv ------------------------------------

async def _exec(*cmd: str | Path, timeout: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=HERE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", f"timed out after {timeout:.0f} s"
    return proc.returncode or 0, out.decode(), err.decode()


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1][:200]


async def dbos_python() -> tuple[Path | None, str]:
    """benchmarks/.dbos-venv's python with dbos installed (made if missing), or why not."""
    python = DBOS_VENV / "bin" / "python"
    if not python.exists():
        rc, _, err = await _exec(sys.executable, "-m", "venv", DBOS_VENV, timeout=120)
        if rc:
            return None, f"python -m venv failed: {_last_line(err)}"
    rc, _, _ = await _exec(python, "-c", "import dbos", timeout=60)
    if rc:
        rc, _, err = await _exec(python, "-m", "pip", "install", "-q", "dbos", timeout=300)
        if rc:
            shutil.rmtree(DBOS_VENV, ignore_errors=True)
            return None, f"pip install dbos failed: {_last_line(err)}"
    return python, ""


async def dbos_lines(directory: str, ours: dict[str, Compared]) -> list[str]:
    python, why = await dbos_python()
    if python is None:
        return [f"DBOS: not measured ({why})."]
    runs: list[tuple[str, str, dict[str, Any] | str]] = []
    async with schema("dbos") as name:
        for label, url, key in (
                (f"{await pg_version()} (psycopg 3, its own schema)", DSN, "postgres"),
                ("SQLite (its default: rollback journal, synchronous=FULL)",
                 f"sqlite:///{os.path.join(directory, 'dbos.sqlite')}", "full")):
            rc, out, err = await _exec(python, HERE / "_dbos_peer.py", url, name,
                                       str(RUN_SECONDS), str(FLIGHT), str(RUNS), timeout=240)
            runs.append((label, key, json.loads(_last_line(out)) if rc == 0 else
                         f"failed: {_last_line(err)}"))
    lines = [
        "| database | sequential: DBOS | statesaga | floor | "
        f"{FLIGHT} in flight: DBOS | statesaga | floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    version, sizes = "", []
    for label, key, got in runs:
        if isinstance(got, str):
            lines.append(f"| {label} | {got} | | | | | |")
            continue
        version, r = got["dbos"], ours[key]
        sizes.append(f"{got['n']:,}")
        lines.append(f"| {label} | {got['sequential']:,.0f} | {r['saga 1']:,.0f} | "
                     f"{r['floor 1']:,.0f} | {got['in_flight']:,.0f} | {r['saga n']:,.0f} | "
                     f"{r['floor n']:,.0f} |")
    if version:
        lines += ["", f"Sagas per second. DBOS {version}: one `@DBOS.workflow` calling four "
                  "no-op `@DBOS.step`s (a no-op compensation step each, in an `except`), in its "
                  f"own virtualenv (benchmarks/.dbos-venv); {' and '.join(sizes)} sagas per "
                  f"run, median of {RUNS}. statesaga and floor: from the first table (beside "
                  "DBOS on SQLite: synchronous=FULL, as DBOS's default). The issue saw DBOS at "
                  "about 100 sagas/s on either database and the PostgreSQL floor at about 900."]
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
                    await compare_sqlite(directory, "normal"), await compare_postgres()]
        alone = await no_database()
        ours = dict(zip(("full", "normal", "postgres"), compared, strict=True))
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
        "transaction on both databases, its group commit). Store writes per step: the "
        "store's `create`, `commit`, `claim`, `renew` and `release` calls (each a transaction "
        "of its own, or its share of a grouped one), counted by "
        f"wrapping them, divided by {STEPS} steps per saga; the target is one commit per step, "
        f"i.e. (1 create + {STEPS} commits) / {STEPS} = {(1 + STEPS) / STEPS:.2f}. "
        "Transactions per step: the transactions those writes took (group commit's batches), "
        "per step; the floor's is 1.00.",
        "",
        *compared_lines(compared),
        *no_database_lines(alone, compared[1]),
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
