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

from ledger import build_machine, new_ledger, open_ledger, violations

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


LAST_CALLS: list[Any] = []


async def recover_and_look(url: str, **env: str) -> tuple[list[SagaRecord], list[str]]:
    """Recover in a fresh process; then every saga in the store, and what is wrong."""
    code, out = await finish(await child(url, "recover", **env))
    assert 0 == code, out
    store, ledger = open_store(url), open_ledger(url)
    try:
        records = [await store.load(s.saga_id) for s in await store.list()]
        effects, calls = await ledger.read()
        LAST_CALLS[:] = calls
    finally:
        await store.close()
        await ledger.close()
    machine = build_machine("crash", parallel=env.get("CRASH_SHAPE") == "parallel")
    return records, violations(records, effects, calls, machine)


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


async def test_processes_killed_with_branches_in_flight_leave_work_a_fresh_one_finishes(
        store_url: str) -> None:
    """b and c run at once (a parallel group): killed with both in flight, a fresh process
    runs them again with the same idempotency keys, or undoes what may have happened."""
    seed = int(os.environ.get("STATESAGA_CRASH_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    await new_ledger(store_url)
    launched = []
    for round_ in range(4):  # killed early and late: in a, in the group, in undoing it
        sagas = [(f"p{round_}-{i}", {"fail_at": rng.choice([None, None, "b", "c"]),
                                     "delay": round(rng.uniform(0.02, 0.06), 4)})
                 for i in range(16)]
        launched += [saga_id for saga_id, _ in sagas]
        proc = await child(store_url, "batch", sagas, CRASH_SHAPE="parallel")
        assert proc.stdout is not None
        assert b"ready\n" == await asyncio.wait_for(proc.stdout.readline(), 30)
        await asyncio.sleep((0.05, 0.15, 0.3, 0.5)[round_] * rng.uniform(0.8, 1.2))
        proc.kill()
        code, out = await finish(proc)
        assert KILLED == code, out

    records, problems = await recover_and_look(store_url, CRASH_SHAPE="parallel")

    assert [] == problems, f"STATESAGA_CRASH_SEED={seed}\n" + _histories(records, problems)
    assert set(launched) >= {r.saga_id for r in records}


def _histories(records: Sequence[SagaRecord], problems: Sequence[str]) -> str:
    """The history and the ledger's calls of each saga a problem names, to debug it."""
    bad = {p.split(" ")[0] for p in problems}
    return "\n".join(
        f"{r.saga_id}: " + "; ".join(f"{t.source}-{t.event}->{t.dest}[{t.step}]"
                                     for t in r.history) + " CALLS " + "; ".join(
            f"{c.pid}:{c.kind} {c.step}#{c.attempt} {c.outcome}" for c in LAST_CALLS
            if c.saga_id == r.saga_id) for r in records if r.saga_id in bad)


async def crash_at_every_write(url: str, sagas: Sequence[tuple[str, dict[str, Any]]],
                               shape: str) -> None:
    """Run `sagas` cleanly, then again (ids tagged) in a process killed before and after
    each of the store writes the clean run took, `PARALLEL` processes at a time."""
    code, out = await finish(await child(url, "run", sagas, CRASH_SHAPE=shape))
    assert 0 == code, out
    points = [(n, when) for n in range(1, sum(json.loads(out)) + 1)
              for when in ("before", "after")]
    gate = asyncio.Semaphore(PARALLEL)

    async def crash(n: int, when: str) -> None:
        async with gate:
            tagged = [(f"{saga_id}-{when}-{n}", data) for saga_id, data in sagas]
            code, out = await finish(await child(url, "run", tagged, CRASH_AT=str(n),
                                                 CRASH_WHEN=when, CRASH_SHAPE=shape))
            assert KILLED == code, out

    await asyncio.gather(*(crash(n, when) for n, when in points))


async def test_a_process_killed_at_any_write_with_branches_in_flight_is_finished_by_another(
        store_url: str) -> None:
    await new_ledger(store_url)
    sagas = [("ok-clean", {"delay": 0.02}), ("fail-clean", {"fail_at": "c", "delay": 0.02})]
    await crash_at_every_write(store_url, sagas, "parallel")
    records, problems = await recover_and_look(store_url, CRASH_SHAPE="parallel")

    assert [] == problems, _histories(records, problems)
    assert any(t.event == "retry_unknown" and t.source == "bc"
               for r in records for t in r.history)  # some died with b and c in flight
