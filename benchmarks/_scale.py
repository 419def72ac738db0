"""Scaling out on PostgreSQL: worker processes sharing one database, and `recover()` of many
unfinished sagas (both measured once each)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from statesaga import Orchestrator, PostgresStore, SagaStateMachine, SQLiteStore

from ._db import DSN, FLIGHT, HERE, UNFINISHED, met, pg_version, rate, schema
from .core import definition

WORKERS = (1, 2, 4)
WORKER_SAGAS = 2000
RECOVER = 10_000
RECOVER_TARGET = 10.0  # seconds


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
                     f"{met(seconds < RECOVER_TARGET and recovered == RECOVER)} |")
    return lines
