"""The operations console at a million sagas: list and saga pages over real HTTP, on PostgreSQL.

1,000,000 sagas are written by `generate_series` (one start transition each, as a worker
would leave them) into a fresh schema that `PostgresStore` created, plus one saga with 1,000
transitions; then `statesaga web` runs in a child process and an HTTP client times pages.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import httpx

from statesaga import PostgresStore
from statesaga.examples.trip import trip

from ._db import DSN, met, pg_version, schema

SAGAS = 1_000_000
BIG = 1_000  # transitions of the big saga
REPEAT = 15  # answers per page; the median is reported
TARGET_MS = 200.0
ROOT = Path(__file__).resolve().parent.parent

# One statement: 1M sagas over 30 days, mostly completed, with every status present.
SEED_SAGAS = """
INSERT INTO {s}sagas (saga_id, name, version, state, status, data, error, revision, created_at,
                      updated_at, owner, lease_until, waiting)
SELECT 'saga-' || lpad(i::text, 7, '0'), CASE WHEN i % 3 = 0 THEN 'payment' ELSE 'trip' END,
       CASE WHEN i % 3 = 0 THEN 'p4ym3nt' ELSE $2::text END, v.state, v.status,
       '{{"flight": "LH' || (i % 1000) || '", "amount": ' || (i % 500) || '}}',
       CASE WHEN v.status = 'failed' THEN 'saga ''saga-' || i || ''' is stuck in ' ||
            'compensating_book_hotel after 5 attempts: hotels.cancel failed (HTTP 503)'
            WHEN v.status = 'compensated' THEN 'step ''charge_payment'' failed on attempt 1: '
            || 'card declined' END,
       2, t.at, t.at + interval '2 seconds',
       CASE WHEN v.status IN ('running', 'compensating') THEN 'worker-' || (i % 4) END,
       CASE WHEN v.status IN ('running', 'compensating') THEN $3::float8 END, false
FROM generate_series(1, $1::int) AS i,
     LATERAL (SELECT now() - (($1 - i) * interval '2.5 seconds') AS at) AS t,
     LATERAL (SELECT CASE WHEN i % 1000 < 960 THEN 'completed'
                          WHEN i % 1000 < 980 THEN 'compensated'
                          WHEN i % 1000 < 985 THEN 'failed'
                          WHEN i % 1000 < 995 THEN 'running'
                          WHEN i % 1000 < 998 THEN 'compensating' ELSE 'pending' END AS status)
        AS w,
     LATERAL (SELECT w.status, CASE w.status WHEN 'completed' THEN 'completed'
                  WHEN 'compensated' THEN 'compensated' WHEN 'failed' THEN 'failed'
                  WHEN 'running' THEN 'book_hotel' WHEN 'compensating'
                  THEN 'compensating_book_flight' ELSE 'book_flight' END AS state) AS v
"""
SEED_STARTS = """
INSERT INTO {s}transitions (saga_id, seq, at, source, dest, event)
SELECT saga_id, 1, created_at, NULL, 'book_flight', 'start' FROM {s}sagas
"""
SEED_BIG = """
WITH h AS (
    SELECT g AS seq, now() + g * interval '10 ms' AS at,
           CASE WHEN g = 1 THEN NULL ELSE 'book_flight' END AS source,
           CASE WHEN g = $1 THEN 'book_hotel' ELSE 'book_flight' END AS dest,
           CASE WHEN g = 1 THEN 'start' WHEN g = $1 THEN 'succeed' ELSE 'retry' END AS event,
           CASE WHEN g > 1 THEN 'book_flight' END AS step,
           CASE WHEN g > 1 THEN g - 1 END AS attempt,
           CASE WHEN g > 1 AND g < $1 THEN 'flights API timed out (attempt ' || (g - 1) || ')'
           END AS error
    FROM generate_series(1, $1) AS g),
s AS (INSERT INTO {s}sagas (saga_id, name, version, state, status, data, revision, created_at,
                            updated_at, waiting)
      VALUES ('big', 'trip', $2, 'book_hotel', 'running', '{{"flight": "LH1"}}', $1, now(),
              now() + $1 * interval '10 ms', false))
INSERT INTO {s}transitions (saga_id, seq, at, source, dest, event, step, attempt, error, result)
SELECT 'big', seq, at, source, dest, event, step, attempt, error,
       CASE WHEN event = 'succeed' THEN '{{"booking_id": "F-1"}}' END FROM h
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _seed(name: str) -> dict[str, float]:
    """Create the schema through the store, then fill it; seconds per part."""
    store = PostgresStore(DSN, schema=name)
    await store.open()
    await store.close()
    conn = await asyncpg.connect(DSN)
    s = f'"{name}".'
    took: dict[str, float] = {}
    try:
        for label, sql, args in (
                ("sagas", SEED_SAGAS, (SAGAS, trip.version, time.time() + 3600)),
                ("start transitions", SEED_STARTS, ()),
                ("saga of 1,000 transitions", SEED_BIG, (BIG, trip.version))):
            start = time.perf_counter()
            await conn.execute(sql.format(s=s), *args)
            took[label] = time.perf_counter() - start
        start = time.perf_counter()
        await conn.execute(f'VACUUM ANALYZE "{name}".sagas')
        await conn.execute(f'VACUUM ANALYZE "{name}".transitions')
        took["VACUUM ANALYZE"] = time.perf_counter() - start
    finally:
        await conn.close()
    return took


def _times(client: httpx.Client, path: str) -> tuple[float, float, int]:
    """(the first answer's ms, the median of the rest, the status) for GET `path`."""
    samples, status = [], 0
    for _ in range(REPEAT + 1):
        start = time.perf_counter()
        answer = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        status = answer.status_code
    return samples[0], statistics.median(samples[1:]), status


def _serve(url: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "statesaga.cli", "web", "--store", url, "--port", str(port)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    for _ in range(400):
        try:
            httpx.get(base + "/api/outbox", timeout=5)
            return server, base
        except httpx.HTTPError:
            if server.poll() is not None:
                raise RuntimeError(f"statesaga web exited: {server.stderr.read()}") from None
            time.sleep(0.05)
    raise RuntimeError("statesaga web did not start")


async def run() -> list[str]:
    async with schema("web") as name:
        seeded = await _seed(name)
        server, base = _serve(f"{DSN}?schema={name}")
        try:
            rows = await asyncio.to_thread(_measure, base)
        finally:
            server.terminate()
            server.wait(timeout=30)
    version = await pg_version()
    lines = [
        "## Operations console (`statesaga web`) at a million sagas",
        "",
        f"{SAGAS:,} sagas in {version} (96% completed, 2% compensated, 0.5% stuck, 1% "
        "running, 0.3% compensating, 0.2% pending; two definitions; 30 days of creation "
        "times), each with its start transition, plus one saga of 1,000 transitions. Seeded "
        "with `generate_series` in "
        + ", ".join(f"{k} {v:.1f} s" for k, v in seeded.items())
        + ". `statesaga web` in a child process (uvicorn, one worker), an `httpx` client on "
        f"the same machine; each page asked {REPEAT + 1} times: the first answer, then the "
        "median of the rest. Each list answer includes the counts per status, each capped at "
        "100,000 (\"100,000+\"); `/metrics` counts exactly.",
        "",
        "| page | what it asks | first, ms | median, ms | target |",
        "|---|---|---:|---:|---|",
    ]
    for page, what, first, median, target in rows:
        goal = "" if target is None else f"< {target:.0f} ms: {met(median < target)}"
        lines.append(f"| `{page}` | {what} | {first:.1f} | {median:.1f} | {goal} |")
    lines += ["", "The saga page's first answer draws its diagram with graphviz's `dot` (a "
              "child process); the console keeps the drawing per saga revision, so later "
              "answers reuse it until the saga moves."]
    return lines


def _measure(base: str) -> list[tuple[str, str, float, float, float | None]]:
    out: list[tuple[str, str, float, float, float | None]] = []
    with httpx.Client(base_url=base, timeout=60) as client:
        deep = client.get("/api/sagas", params={"limit": "50"}).json()
        for _ in range(20):  # 20 pages down: keyset paging costs what page 1 does
            deep = client.get("/api/sagas", params={"limit": "50", "after": deep["next"]}
                              ).json()
        pages: list[tuple[str, str, float | None]] = [
            ("/", "the newest 50 and the counts", TARGET_MS),
            ("/?status=failed", "stuck sagas, newest first", TARGET_MS),
            (f"/?after={deep['next']}", "page 22 (keyset cursor)", TARGET_MS),
            ("/?name=payment&version=p4ym3nt", "one definition's sagas", TARGET_MS),
            ("/?id=saga-00424", "id prefix", TARGET_MS),
            ("/?error=HTTP+503&status=failed", "error text among stuck sagas", TARGET_MS),
            ("/?state=compensating_book_flight", "one state", TARGET_MS),
            ("/api/sagas?limit=50", "the same list as JSON", TARGET_MS),
            ("/sagas/big", "saga page, 1,000 transitions, diagram, timeline", TARGET_MS),
            ("/api/sagas/big", "the same saga as JSON", TARGET_MS),
            ("/workers", "leases held (1.3% of sagas)", None),
            ("/definitions", "unfinished and stuck by definition", None),
            ("/metrics", "Prometheus text", None),
        ]
        for path, what, target in pages:
            first, median, status = _times(client, path)
            if status != 200:
                raise RuntimeError(f"{path} answered {status}")
            out.append((path if len(path) < 40 else path[:36] + "…", what, first, median,
                        target))
    return out

