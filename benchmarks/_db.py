"""What the store benchmarks share: the databases, how a rate is measured, fresh schemas."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

DSN = os.environ.get("STATESAGA_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
FLIGHT = 16  # sagas in flight in the concurrent runs (and the PostgreSQL pools' size)
RUNS = 5  # each figure is the median of RUNS runs; floor and statesaga runs alternate
RUN_SECONDS = 0.6  # sagas per run: as many as statesaga runs in about this long, sequentially
HERE = Path(__file__).resolve().parent
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


async def pg_version() -> str:
    conn = await asyncpg.connect(DSN)
    try:
        return f"PostgreSQL {conn.get_server_version().major}"
    finally:
        await conn.close()


def met(ok: bool) -> str:
    return "met" if ok else "**NOT met**"
