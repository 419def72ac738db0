"""The peer: the same 4-step saga (no-op steps, no-op compensations) on DBOS Transact.

`<.dbos-venv python> _dbos_peer.py URL SCHEMA SECONDS FLIGHT RUNS` prints sagas/s as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import sys
import time
from importlib.metadata import version

from dbos import DBOS

STEPS = 4
SAGAS = (50, 1000)  # sagas per run: as many as run in SECONDS, within these bounds


@DBOS.step()
async def step(i: int) -> None:
    return None


@DBOS.step()
async def compensate(i: int) -> None:
    return None


@DBOS.workflow()
async def saga() -> None:
    """Forward steps in order; on a failure, compensate those done, newest first."""
    done: list[int] = []
    try:
        for i in range(STEPS):
            await step(i)
            done.append(i)
    except Exception:
        for i in reversed(done):
            await compensate(i)
        raise


async def rate(n: int, flight: int) -> float:
    """Sagas per second, `flight` at a time (1: one after another); as `_db.rate`, which this
    script cannot import: it runs in the DBOS virtualenv, without statesaga or asyncpg."""
    left = n

    async def lane() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await saga()

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(flight)))
    return n / (time.perf_counter() - start)


async def main(url: str, schema: str, seconds: float, flight: int,
               runs: int) -> dict[str, object]:
    config = {"name": "statesaga-bench", "system_database_url": url, "log_level": "ERROR"}
    if url.startswith("postgres"):
        config["dbos_system_schema"] = schema
    DBOS(config=config)
    DBOS.launch()
    try:
        await rate(10, 1)  # warm up: tables, prepared statements
        n = min(max(int(await rate(20, 1) * seconds), SAGAS[0]), SAGAS[1])
        seq, par = [], []
        for _ in range(runs):
            seq.append(await rate(n, 1))
            par.append(await rate(n, flight))
    finally:
        DBOS.destroy(destroy_registry=True)
    return {"dbos": version("dbos"), "n": n, "sequential": statistics.median(seq),
            "in_flight": statistics.median(par)}


if __name__ == "__main__":
    logging.disable(logging.WARNING)
    url, schema, seconds, flight, runs = sys.argv[1:6]
    result = asyncio.run(main(url, schema, float(seconds), int(flight), int(runs)))
    print(json.dumps(result), flush=True)
