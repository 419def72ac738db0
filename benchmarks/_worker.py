"""A worker process for benchmarks/stores.py: `python -m benchmarks._worker DSN SCHEMA FLIGHT`.

Prints "ready", runs `Orchestrator.work` from "go" to "stop" (stdin), prints what it drove.
"""

from __future__ import annotations

import asyncio
import json
import sys

from statesaga import Orchestrator, PostgresStore

from .common import quiet_logs
from .core import definition


async def main(dsn: str, schema: str, flight: int) -> int:
    store = PostgresStore(dsn, schema=schema)  # its default pool: 10 connections
    orch = Orchestrator(store=store, sagas=[definition()])
    await store.open()
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    stop = asyncio.Event()
    told = loop.run_in_executor(None, sys.stdin.readline)  # "stop"
    told.add_done_callback(lambda _: stop.set())
    try:
        return await orch.work(concurrency=flight, stop=stop)
    finally:
        await store.close()


if __name__ == "__main__":
    quiet_logs()
    driven = asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    print(json.dumps({"driven": driven}), flush=True)
