"""Sub-sagas across crashes in real processes: a process running a parent and its child saga
is SIGKILLed at every store write in turn, and at random moments; a fresh process recovers
both, and the ledger shows each effect done or undone as the sagas' ends say.

`tests/crash_child.py` is the process (CRASH_SHAPE=child); `tests/children_shape.py` the
sagas: a, then `pay` (a child saga of b and c), then d.
"""

from __future__ import annotations

import asyncio
import random

from children_shape import problems
from ledger import new_ledger, open_ledger
from test_crash import KILLED, child, crash_at_every_write, finish

from statesaga.stores.urls import open_store

SAGAS = [("ok", {}), ("child-fails", {"fail_at": "c"}), ("after-child", {"fail_at": "d"})]


async def recover_and_check(url: str) -> tuple[list[str], list[str]]:
    """Recover in a fresh process; then the sagas in the store, and what is wrong."""
    code, out = await finish(await child(url, "recover", CRASH_SHAPE="child"))
    assert 0 == code, out
    store, ledger = open_store(url), open_ledger(url)
    try:
        records = [await store.load(s.saga_id) for s in await store.list()]
        effects, calls = await ledger.read()
    finally:
        await store.close()
        await ledger.close()
    return [r.saga_id for r in records], problems(records, effects, calls)


async def test_a_process_killed_at_any_write_of_a_parent_or_its_child_is_finished_by_another(
        store_url: str) -> None:
    await new_ledger(store_url)
    await crash_at_every_write(store_url, SAGAS, "child")
    ids, wrong = await recover_and_check(store_url)

    assert [] == wrong
    assert any(i.endswith("/pay") for i in ids)


async def test_processes_killed_at_random_moments_with_children_in_flight_leave_no_trace(
        store_url: str) -> None:
    rng = random.Random()
    await new_ledger(store_url)
    for round_ in range(3):
        sagas = [(f"r{round_}-{i}", {"fail_at": rng.choice([None, None, "b", "c", "d"]),
                                     "delay": round(rng.uniform(0.01, 0.04), 4)})
                 for i in range(12)]
        proc = await child(store_url, "batch", sagas, CRASH_SHAPE="child")
        assert proc.stdout is not None
        assert b"ready\n" == await asyncio.wait_for(proc.stdout.readline(), 30)
        await asyncio.sleep((0.05, 0.15, 0.3)[round_] * rng.uniform(0.8, 1.2))
        proc.kill()
        code, out = await finish(proc)
        assert KILLED == code, out

    _ids, wrong = await recover_and_check(store_url)

    assert [] == wrong
