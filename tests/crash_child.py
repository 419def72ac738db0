"""A child process for tests/test_crash.py: runs sagas against a store, and dies.

    python tests/crash_child.py URL run SAGAS
        Run the sagas one after the other. With CRASH_AT=N and CRASH_WHEN=before|after it
        SIGKILLs itself at its N-th store write (a create or a commit), before or after the
        write is applied. Prints the number of writes each saga took (JSON), if still alive.
    python tests/crash_child.py URL batch SAGAS
        Open the store, print "ready", run all the sagas at once, print "done", then wait
        to be killed (the parent SIGKILLs it at a random moment).
    python tests/crash_child.py URL race SAGAS
        Open the store, print "ready", wait for a line on stdin, then run all the sagas at
        once (another process races it with the same ids). Prints each saga's status, or
        "conflict" where the other process held it (JSON).
    python tests/crash_child.py URL recover
        A fresh process: wait out the dead processes' leases, then `recover()` until no
        saga is unfinished. Prints {"recovered": n, "unfinished": [ids]} (JSON).

URL is the store's URL (sqlite:///... or postgresql://...?schema=...); the ledger of the
fake services lives in the same database. SAGAS is a JSON list of [saga_id, data].
Every process uses a lease of CRASH_LEASE seconds (default 0.5).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from typing import Any

import children_shape
import ledger
import structlog

from statesaga import Orchestrator, SagaConflict, SagaStatus
from statesaga.stores.urls import open_store
from statesaga.testing.explore import CrashingStore

LEASE = float(os.environ.get("CRASH_LEASE", "0.5"))
SHAPE = os.environ.get("CRASH_SHAPE")
MACHINE = children_shape.build_parent() if SHAPE == "child" else ledger.build_machine(
    "crash", parallel=SHAPE == "parallel")
UNFINISHED = (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING)


def die(where: str = "") -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught


async def run(url: str, sagas: list[tuple[str, dict[str, Any]]]) -> None:
    crash_at = os.environ.get("CRASH_AT")
    store = CrashingStore(open_store(url), None if crash_at is None else int(crash_at),
                          os.environ.get("CRASH_WHEN", "before") == "after", crash=die)
    orch = Orchestrator(store=store, lease=LEASE)  # type: ignore[arg-type]
    writes = []
    for saga_id, data in sagas:
        before = store.writes
        await orch.run(MACHINE, data, saga_id=saga_id)
        writes.append(store.writes - before)
    await store.close()
    print(json.dumps(writes), flush=True)


async def ready(url: str) -> Orchestrator:
    """An orchestrator on `url` with the store and the ledger connected; prints `ready`."""
    store = open_store(url)
    await store.open()  # type: ignore[attr-defined]
    await ledger.ledger().open()
    print("ready", flush=True)
    return Orchestrator(store=store, lease=LEASE)


async def batch(url: str, sagas: list[tuple[str, dict[str, Any]]]) -> None:
    orch = await ready(url)
    await asyncio.gather(*(orch.run(MACHINE, data, saga_id=saga_id) for saga_id, data in sagas))
    print("done", flush=True)
    await asyncio.Event().wait()


async def race(url: str, sagas: list[tuple[str, dict[str, Any]]]) -> None:
    orch = await ready(url)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    async def one(saga_id: str, data: dict[str, Any]) -> str:
        try:
            return (await orch.run(MACHINE, data, saga_id=saga_id)).status.value
        except SagaConflict:
            return "conflict"

    outcomes = await asyncio.gather(*(one(saga_id, data) for saga_id, data in sagas))
    await orch.store.close()
    print(json.dumps(dict(zip([saga_id for saga_id, _ in sagas], outcomes, strict=True))),
          flush=True)


async def recover(url: str) -> int:
    store = open_store(url)
    orch = Orchestrator(store=store, sagas=[MACHINE], lease=LEASE)
    await asyncio.sleep(LEASE)  # the killed processes' leases run out
    recovered, unfinished = 0, []
    for _ in range(100):  # a lease renewed just before the kill: try again a little later
        recovered += len(await orch.recover())
        unfinished = [r.saga_id for status in UNFINISHED for r in await store.list(
            status=status)]
        if not unfinished:
            break
        await asyncio.sleep(0.1)
    await store.close()
    print(json.dumps({"recovered": recovered, "unfinished": unfinished}), flush=True)
    return 0 if not unfinished else 1


async def main(argv: list[str]) -> int:
    url, mode = argv[0], argv[1]
    os.environ[ledger.ENV] = url
    try:
        if mode == "recover":
            return await recover(url)
        sagas = [(saga_id, data) for saga_id, data in json.loads(argv[2])]
        await {"run": run, "batch": batch, "race": race}[mode](url, sagas)
        return 0
    finally:
        await ledger.ledger().close()


if __name__ == "__main__":
    structlog.configure(  # the orchestrator's warnings go to stderr; stdout is for the parent
        wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    sys.exit(asyncio.run(main(sys.argv[1:])))
