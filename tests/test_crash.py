"""Crashes in real processes: a child is SIGKILLed at every persistence point in turn, and at
random moments, then a fresh process recovers; the outside world shows every effect once.

The sagas (steps a, b, c; some fail at c) record their effects in a ledger in the store's own
database (`tests/ledger.py`); `tests/crash_child.py` is the child. SQLite runs with
durability="normal" (a process crash loses nothing; only a power loss could).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ledger import new_ledger, open_ledger, violations

from statesaga import SagaRecord
from statesaga.stores.urls import open_store

CHILD = Path(__file__).with_name("crash_child.py")
KILLED = -signal.SIGKILL
PARALLEL = 4  # children at once (each one is mostly waiting for its database)


async def child(url: str, mode: str, sagas: Sequence[tuple[str, dict[str, Any]]] = (),
                **env: str) -> asyncio.subprocess.Process:
    args = [] if mode == "recover" else [json.dumps(sagas)]
    return await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), url, mode, *args, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """Wait for a child; its exit code and its stdout (its stderr, if it failed)."""
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    code = proc.returncode
    assert code is not None
    return code, out.decode() if code in (0, KILLED) else out.decode() + err.decode()


async def recover_and_look(url: str) -> tuple[list[SagaRecord], list[str]]:
    """Recover in a fresh process; then every saga in the store, and what is wrong."""
    code, out = await finish(await child(url, "recover"))
    assert 0 == code, out
    store, ledger = open_store(url), open_ledger(url)
    try:
        records = await store.list()
        effects, calls = await ledger.read()
    finally:
        await store.close()
        await ledger.close()
    return records, violations(records, effects, calls)


def pair(tag: str) -> list[tuple[str, dict[str, Any]]]:
    """A saga that completes, then one that fails at its last step and is compensated."""
    return [(f"ok-{tag}", {}), (f"fail-{tag}", {"fail_at": "c"})]


async def test_a_process_killed_at_any_persistence_point_leaves_work_a_fresh_one_finishes(
        store_url: str) -> None:
    await new_ledger(store_url)
    code, out = await finish(await child(store_url, "run", pair("clean")))
    assert 0 == code, out
    writes = json.loads(out)  # the store writes of each saga, run without a crash
    points = [(n, when) for n in range(1, sum(writes) + 1) for when in ("before", "after")]
    gate = asyncio.Semaphore(PARALLEL)

    async def crash(n: int, when: str) -> int:
        async with gate:
            proc = await child(store_url, "run", pair(f"{when}-{n}"), CRASH_AT=str(n),
                               CRASH_WHEN=when)
            code, out = await finish(proc)
            assert code in (0, KILLED), out
            return code

    codes = await asyncio.gather(*(crash(n, when) for n, when in points))
    records, problems = await recover_and_look(store_url)

    assert {p: KILLED for p in points} == dict(zip(points, codes, strict=True))
    assert [] == problems
    stored = {"ok-clean", "fail-clean"}
    for n, when in points:  # a saga exists once its create was applied
        first = 1
        for (saga_id, _), count in zip(pair(f"{when}-{n}"), writes, strict=True):
            if n > first or (n == first and when == "after"):
                stored.add(saga_id)
            first += count
    assert sorted(stored) == sorted(r.saga_id for r in records)


async def test_processes_killed_at_random_moments_leave_work_a_fresh_one_finishes(
        store_url: str) -> None:
    seed = int(os.environ.get("STATESAGA_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    await new_ledger(store_url)
    launched = []
    for round_ in range(4):
        sagas = [(f"r{round_}-{i}", {"fail_at": rng.choice([None, None, "b", "c"]),
                                     "delay": round(rng.uniform(0.01, 0.05), 4)})
                 for i in range(24)]  # about 0.2 s for the batch, so most kills land in it
        launched += [saga_id for saga_id, _ in sagas]
        proc = await child(store_url, "batch", sagas)
        assert proc.stdout is not None
        assert b"ready\n" == await asyncio.wait_for(proc.stdout.readline(), 30)
        await asyncio.sleep(rng.uniform(0, 0.2))
        proc.kill()
        code, out = await finish(proc)
        assert KILLED == code, out

    records, problems = await recover_and_look(store_url)

    assert [] == problems, f"STATESAGA_CRASH_SEED={seed}"
    assert set() == {r.saga_id for r in records} - set(launched)
