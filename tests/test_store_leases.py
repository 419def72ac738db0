"""Leases on every store: fences, renewals and what they report, abort requests, and clocks."""

from __future__ import annotations

import time
from typing import Any

import pytest
from storekit import create, saga, step

from statesaga import (
    LeaseHeld,
    Orchestrator,
    PostgresStore,
    SagaNotFound,
    SagaStateMachine,
    SagaStatus,
)
from statesaga.stores.base import Signals


async def test_a_saga_is_created_with_fence_1_and_every_claim_raises_it_by_one(
        store: Any) -> None:
    await create(store, saga(), owner=None)
    fences = [(await store.load("s1")).fence]

    for now in (0, 20, 40):  # each claim after the last one's lease ran out
        (claimed,) = await store.claim(f"w{now}", now=now, lease=10, limit=5)
        fences += [claimed.fence, (await store.load("s1")).fence]
    (by_id,) = await store.claim("op", now=60, lease=10, limit=1, saga_id="s1")
    await store.commit(step("s1", by_id.revision + 1, "book", "pay", owner="op"))

    assert [1, 2, 2, 3, 3, 4, 4] == fences
    assert 5 == by_id.fence
    assert [5, 5] == [(await store.load("s1")).fence, (await store.list())[0].fence]


async def test_renew_extends_the_owners_leases_and_reports_every_other_one_lost(
        store: Any) -> None:
    for saga_id in ("kept", "taken", "released"):
        await create(store, saga(saga_id), owner=None)
    await store.claim("w1", now=0, lease=10, limit=5)
    await store.claim("w2", now=20, lease=10, limit=1, saga_id="taken")
    await store.release("w1", ["released"])

    signals = await store.renew("w1", ["kept", "taken", "released", "gone"], now=20, lease=10)

    assert {"kept": Signals(), "taken": Signals(lost=True), "released": Signals(lost=True),
            "gone": Signals(lost=True)} == signals
    assert ["released"] == [r.saga_id for r in await store.claim("w3", now=25, lease=10,
                                                                  limit=5)]
    assert ["kept", "taken"] == sorted(  # both leases ran until 30
        r.saga_id for r in await store.claim("w3", now=30, lease=10, limit=5))


async def test_release_frees_only_the_owners_leases(store: Any) -> None:
    await create(store, saga(), owner=None)
    await store.claim("w1", now=0, lease=10, limit=1)

    await store.release("w2", ["s1"])  # not w2's: no effect
    assert [] == await store.claim("w3", now=5, lease=10, limit=5)
    await store.release("w1", ["s1"])
    assert ["s1"] == [r.saga_id for r in await store.claim("w3", now=5, lease=10, limit=5)]


async def test_an_abort_request_is_reported_by_every_following_commit_and_renewal(
        store: Any) -> None:
    await create(store, saga(), now=0, lease=10)
    assert Signals() == await store.commit(step("s1", 2, "book", "pay", now=0, lease=10))

    found = await store.request_abort("s1", "customer cancelled")

    aborted = Signals(abort="customer cancelled")
    assert SagaStatus.RUNNING is found
    assert {"s1": aborted} == await store.renew("w1", ["s1"], now=1, lease=10)
    assert aborted == await store.commit(step("s1", 3, "pay", "ship", now=1, lease=10))
    assert aborted == await store.commit(step("s1", 4, "ship", "ship"))


async def test_commit_and_renew_report_how_many_events_are_queued(store: Any) -> None:
    await create(store, saga(), now=0, lease=10)
    for m in ("m1", "m2"):
        await store.enqueue_event("s1", m, "Paid", "{}")
    first = (await store.queued_events("s1"))[0]

    renewed = await store.renew("w1", ["s1"], now=0, lease=10)
    consumed = await store.commit(step("s1", 2, "book", "pay", inbox="m1", consumed=first.seq,
                                       now=0, lease=10))

    assert ({"s1": Signals(events=2)}, Signals(events=1)) == (renewed, consumed)


async def test_an_abort_request_for_an_ended_saga_returns_its_status_and_records_nothing(
        store: Any) -> None:
    await create(store, saga("pending", status=SagaStatus.PENDING), owner=None)
    await create(store, saga("stuck"), owner=None)
    await store.commit(step("stuck", 2, "book", "failed", status=SagaStatus.FAILED, owner=None))

    found = {i: await store.request_abort(i, "stop") for i in ("pending", "stuck")}
    with pytest.raises(SagaNotFound):
        await store.request_abort("nope", "stop")

    assert {"pending": SagaStatus.PENDING, "stuck": SagaStatus.FAILED} == found
    retried = step("stuck", 3, "failed", "compensating_book", status=SagaStatus.COMPENSATING)
    assert Signals() == await store.commit(retried)  # the request found it ended: not kept
    (claimed,) = await store.claim("w1", now=0, lease=10, limit=1, saga_id="pending")
    assert Signals(abort="stop") == await store.commit(step("pending", claimed.revision + 1,
                                                            "book", "pay"))


async def test_lease_times_without_now_come_from_the_stores_own_clock(store: Any) -> None:
    await create(store, saga(), owner=None)

    (claimed,) = await store.claim("w1", now=None, lease=30, limit=1)
    live = await store.claim("w2", now=None, lease=30, limit=1)
    later = await store.claim("w2", now=time.time() + 60, lease=30, limit=1)

    assert (["s1"], [], ["s1"]) == ([claimed.saga_id], live, [r.saga_id for r in later])


async def test_a_client_whose_clock_runs_20_s_ahead_cannot_take_over_a_live_lease_on_postgres(
        postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    machine = SagaStateMachine("skewed")
    machine.step("only", lambda ctx: None)
    async with PostgresStore(postgres_dsn, schema=pg_schema) as worker, \
            PostgresStore(postgres_dsn, schema=pg_schema) as client:
        await Orchestrator(store=worker).start(machine, saga_id="s1")
        assert ["s1"] == [r.saga_id for r in await worker.claim("w1", now=None, lease=15,
                                                                limit=1)]
        real = time.time
        monkeypatch.setattr(time, "time", lambda: real() + 20)  # the client's clock is ahead

        with pytest.raises(LeaseHeld):  # an orchestrator on the real clock passes now=None
            await Orchestrator(store=client, sagas=[machine]).resume("s1")
        assert [] == await client.claim("w2", now=None, lease=15, limit=5)
        # had it judged expiry by its own clock, it would have taken the saga over now:
        assert ["s1"] == [r.saga_id for r in await client.claim("w2", now=time.time(),
                                                                lease=15, limit=5)]
