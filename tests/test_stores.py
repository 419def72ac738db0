"""One conformance suite for every store (memory, SQLite, PostgreSQL): the saga log."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import attrs
import pytest
from storekit import T0, TRICKY_IDS, Backend, count_calls, create, saga, step

from statesaga import (
    Orchestrator,
    SagaConflict,
    SagaError,
    SagaNotFound,
    SagaStatus,
    Transition,
)
from statesaga.examples.trip import build_trip, trip_services
from statesaga.exceptions import DuplicateMessage
from statesaga.stores.base import (
    EventQueue,
    Leases,
    Outbox,
    ParticipantStore,
    SagaLog,
    SagaStore,
)

# -- the conformance suite: every store ---------------------------------------------------


async def test_every_store_plays_every_role_and_opens_and_closes_with_async_with(
        backend: Backend) -> None:
    store = backend.store()

    async with store as opened:
        roles = [isinstance(opened, role) for role in (SagaLog, Leases, EventQueue, Outbox,
                                                       ParticipantStore, SagaStore)]
        await create(opened, saga())
    async with store.reopen() as again:  # a fresh handle on the same sagas
        loaded = await again.load("s1")

    assert (store, [True] * 6) == (opened, roles)
    assert saga() == loaded


async def test_a_created_saga_loads_back_as_it_was_created(store: Any) -> None:
    record = saga(data={"flight": "LH1", "seats": [1, 2], "vip": True, "note": None},
                  deadline_at=T0 + timedelta(minutes=5))
    await create(store, record)

    assert record == await store.load("s1")


async def test_results_are_rebuilt_from_the_transitions_latest_per_step(store: Any) -> None:
    await create(store, saga())
    await store.commit(step("s1", 2, "book", "book", result={"try": 1}))
    await store.commit(step("s1", 3, "book", "pay", result={"try": 2}))
    await store.commit(step("s1", 4, "pay", "ship", result=["paid"]))

    assert {"book": {"try": 2}, "pay": ["paid"]} == (await store.load("s1")).results


async def test_history_comes_back_in_commit_order_with_utc_datetimes(store: Any) -> None:
    await create(store, saga())
    commits = [step("s1", 2, "book", "pay"), step("s1", 3, "pay", "ship"),
               step("s1", 4, "ship", "completed", status=SagaStatus.COMPLETED, owner=None)]
    for commit in commits:
        await store.commit(commit)

    loaded = await store.load("s1")

    assert [saga().history[0], *(c.transition for c in commits)] == list(loaded.history)
    assert (SagaStatus.COMPLETED, "completed", 4) == (loaded.status, loaded.state,
                                                       loaded.revision)
    assert {timedelta(0)} == {t.at.utcoffset() for t in loaded.history} | {
        loaded.created_at.utcoffset(), loaded.updated_at.utcoffset()}
    assert commits[-1].transition.at == loaded.updated_at


async def test_each_transition_keeps_the_worker_that_wrote_it(store: Any) -> None:
    start = Transition(T0, None, "book", "start")  # pending: no worker wrote it
    retried = Transition(T0, "book", "book", "retry", "book", 1, "boom", 0.5, worker="w1")
    record = attrs.evolve(saga(status=SagaStatus.PENDING), history=(start, retried),
                          revision=2)
    await create(store, record, owner=None)
    commits = [step("s1", 3, "book", "pay", worker="w1"),
               step("s1", 4, "pay", "ship", worker="w2"),
               step("s1", 5, "ship", "ship", worker=None)]  # e.g. an operator's write
    for commit in commits:
        await store.commit(commit)

    loaded = await store.load("s1")

    assert [None, "w1", "w1", "w2", None] == [t.worker for t in loaded.history]
    assert [start, retried, *(c.transition for c in commits)] == list(loaded.history)
    assert loaded.history == (await store.list())[0].history


async def test_an_orchestrator_signs_every_transition_it_writes_with_its_owner(
        store: Any) -> None:
    orchestrator = Orchestrator(store=store, owner="host:42:abc")
    machine = build_trip(trip_services())

    ran = await orchestrator.run(machine, {"flight": "LH1"}, saga_id="trip-1")
    await orchestrator.start(machine, {"flight": "LH2"}, saga_id="trip-2")

    assert {"host:42:abc"} == {t.worker for t in (await store.load("trip-1")).history}
    assert ran == await store.load("trip-1")
    assert [None] == [t.worker for t in (await store.load("trip-2")).history]


async def test_creating_a_saga_whose_id_is_taken_raises_conflict(store: Any) -> None:
    await create(store, saga())

    with pytest.raises(SagaConflict):
        await create(store, saga(name="other"))
    assert "trip" == (await store.load("s1")).name


async def test_a_commit_with_a_stale_revision_raises_conflict_and_writes_nothing(
        backend: Backend, store: Any) -> None:
    await create(store, saga())
    await store.commit(step("s1", 2, "book", "pay"))

    with pytest.raises(SagaConflict, match="another writer"):
        await store.commit(step("s1", 2, "book", "ship", result={"late": True}))

    loaded = await store.load("s1")
    assert ("pay", 2, {}) == (loaded.state, loaded.revision, loaded.results)
    assert 2 == await backend.transitions(store, "s1")


async def test_an_unknown_saga_id_raises_not_found(store: Any) -> None:
    with pytest.raises(SagaNotFound):
        await store.load("nope")
    with pytest.raises(SagaNotFound):
        await store.commit(step("nope", 2, "book", "pay"))
    with pytest.raises(SagaNotFound):
        await store.request_abort("nope", "stop")


async def test_list_returns_newest_first_filtered_by_status_and_name(store: Any) -> None:
    for i, (name, status) in enumerate([("trip", SagaStatus.RUNNING),
                                        ("pay", SagaStatus.RUNNING),
                                        ("trip", SagaStatus.PENDING),
                                        ("trip", SagaStatus.RUNNING)]):
        await create(store, saga(f"s{i}", name=name, status=status,
                                 at=T0 + timedelta(seconds=i)))

    assert ["s3", "s2", "s1", "s0"] == [r.saga_id for r in await store.list()]
    assert ["s3", "s2"] == [r.saga_id for r in await store.list(limit=2)]
    assert ["s3", "s1", "s0"] == [
        r.saga_id for r in await store.list(status=SagaStatus.RUNNING)]
    assert ["s3", "s0"] == [
        r.saga_id for r in await store.list(status=SagaStatus.RUNNING, name="trip")]
    assert [] == await store.list(name="unknown")
    assert saga("s1", name="pay", at=T0 + timedelta(seconds=1)) == (
        await store.list(name="pay"))[0]


async def test_sagas_created_at_the_same_time_are_listed_latest_first(store: Any) -> None:
    for saga_id in ("b", "c", "a"):
        await create(store, saga(saga_id))

    assert ["a", "c", "b"] == [r.saga_id for r in await store.list()]


async def test_a_live_lease_keeps_a_saga_from_others_until_it_expires(store: Any) -> None:
    await create(store, saga(), owner=None)

    assert ["s1"] == [r.saga_id for r in await store.claim("w1", now=100, lease=10, limit=5)]
    assert [] == await store.claim("w2", now=105, lease=10, limit=5)
    assert ["s1"] == [r.saga_id for r in await store.claim("w2", now=110, lease=10, limit=5)]


async def test_claim_takes_the_oldest_unfinished_sagas_up_to_the_limit(store: Any) -> None:
    for i in (1, 2, 3):
        await create(store, saga(f"s{i}", at=T0 + timedelta(seconds=i)), owner=None)
    await create(store, saga("done", at=T0), owner=None)
    await store.commit(step("done", 2, "book", "completed", status=SagaStatus.COMPLETED,
                            owner=None))

    first = await store.claim("w1", now=0, lease=10, limit=2)
    rest = await store.claim("w1", now=0, lease=10, limit=2)

    assert (["s1", "s2"], ["s3"]) == ([r.saga_id for r in first], [r.saga_id for r in rest])


async def test_claim_skips_waiting_sagas_and_other_definitions(store: Any) -> None:
    await create(store, saga("waits"), owner=None, waiting=True)
    await create(store, saga("old", version="v0"), owner=None)
    await create(store, saga("other", name="pay"), owner=None)
    await create(store, saga("mine"), owner=None)

    claimed = await store.claim("w1", now=0, lease=10, limit=10,
                                definitions=[("trip", "v1"), ("ship", "v1")])

    assert ["mine"] == [r.saga_id for r in claimed]
    assert [] == await store.claim("w1", now=0, lease=10, limit=10, definitions=[])
    assert ["old", "other"] == sorted(
        r.saga_id for r in await store.claim("w1", now=0, lease=10, limit=10))


async def test_a_waiting_saga_is_claimable_once_its_wake_time_has_come(store: Any) -> None:
    await create(store, saga("timer"), owner=None, waiting=True, wake_at=100)
    await create(store, saga("event"), owner=None, waiting=True)

    assert [] == await store.claim("w1", now=99, lease=1, limit=5)
    assert ["timer"] == [r.saga_id for r in await store.claim("w1", now=100, lease=1,
                                                               limit=5)]
    await store.commit(step("timer", 3, "book", "wait", owner=None, waiting=True, wake_at=200))
    assert [] == await store.claim("w1", now=150, lease=1, limit=5)
    assert ["timer"] == [r.saga_id for r in await store.claim("w1", now=200, lease=1,
                                                               limit=5)]


async def test_a_commit_consuming_a_message_seen_before_raises_and_writes_nothing(
        backend: Backend, store: Any) -> None:
    await create(store, saga())
    await store.commit(step("s1", 2, "book", "pay", inbox="msg-1"))

    with pytest.raises(DuplicateMessage, match="msg-1"):
        await store.commit(step("s1", 3, "pay", "ship", inbox="msg-1", messages=({"n": 1},)))
    with pytest.raises(DuplicateMessage):  # a stale writer with that message: a duplicate too
        await store.commit(step("s1", 2, "book", "pay", inbox="msg-1"))

    assert ("pay", 2) == ((loaded := await store.load("s1")).state, loaded.revision)
    assert 2 == await backend.transitions(store, "s1")
    await store.commit(step("s1", 3, "pay", "ship", inbox="msg-2"))


async def test_claiming_one_saga_by_id_takes_it_waiting_or_stuck_but_not_finished(
        store: Any) -> None:
    await create(store, saga("waits"), owner=None, waiting=True)
    await create(store, saga("stuck"), owner=None)
    await store.commit(step("stuck", 2, "book", "failed", status=SagaStatus.FAILED, owner=None))
    await create(store, saga("done"), owner=None)
    await store.commit(step("done", 2, "book", "completed", status=SagaStatus.COMPLETED,
                            owner=None))

    taken = {saga_id: [r.saga_id for r in await store.claim(
        "op", now=0, lease=10, limit=1, saga_id=saga_id)] for saga_id in ("waits", "stuck",
                                                                          "done", "nope")}

    assert {"waits": ["waits"], "stuck": ["stuck"], "done": [], "nope": []} == taken


async def test_a_claim_bumps_the_revision_so_a_stale_owner_cannot_commit(store: Any) -> None:
    await create(store, saga(), owner="w1", now=0, lease=10)

    (claimed,) = await store.claim("w2", now=20, lease=10, limit=1)

    assert 2 == claimed.revision
    with pytest.raises(SagaConflict):
        await store.commit(step("s1", 2, "book", "pay"))  # w1, whose lease expired
    await store.commit(step("s1", 3, "book", "pay", owner="w2"))
    assert ("pay", 3) == ((loaded := await store.load("s1")).state, loaded.revision)


async def test_a_claimed_pending_saga_is_returned_pending_and_stored_running(
        store: Any) -> None:
    await create(store, saga(status=SagaStatus.PENDING), owner=None)

    (claimed,) = await store.claim("w1", now=0, lease=10, limit=1)

    assert SagaStatus.PENDING == claimed.status
    assert SagaStatus.RUNNING == (await store.load("s1")).status


@pytest.mark.parametrize("saga_id", TRICKY_IDS)
async def test_ids_and_values_with_quotes_or_sql_are_just_data(store: Any, saga_id: str) -> None:
    record = saga(saga_id, name=saga_id, version=saga_id, data={saga_id: saga_id})
    await create(store, record, owner=None)
    await store.commit(step(saga_id, 2, "book", "pay", result={"x": saga_id}))
    await store.request_abort(saga_id, saga_id)

    (claimed,) = await store.claim(saga_id, now=0, lease=1, limit=5,
                                   definitions=[(saga_id, saga_id)])

    assert (saga_id, {saga_id: saga_id}, {"book": {"x": saga_id}}) == (
        claimed.saga_id, dict(claimed.data), dict(claimed.results))
    assert [saga_id] == [r.saga_id for r in await store.list(name=saga_id)]
    assert saga_id == (await store.commit(step(saga_id, 4, "pay", "ship", owner=saga_id))).abort


async def test_data_that_is_not_json_is_refused_before_anything_is_written(
        store: Any) -> None:
    orchestrator = Orchestrator(store=store)

    with pytest.raises(SagaError, match="not JSON"):
        await orchestrator.run(build_trip(trip_services()), {"when": T0}, saga_id="t1")

    assert [] == await store.list()


async def test_a_trip_saga_completes_with_one_commit_per_transition(
        backend: Backend, store: Any) -> None:
    calls = count_calls(store, "create", "commit")

    record = await Orchestrator(store=store).run(build_trip(trip_services()),
                                                 {"flight": "LH1"}, saga_id="trip-1")

    assert SagaStatus.COMPLETED == record.status
    assert record == await store.load("trip-1")
    assert len(record.history) == calls["create"] + calls["commit"]
    assert len(record.history) == await backend.transitions(store, "trip-1")


async def test_every_write_with_outbox_messages_wakes_a_relay_waiting_in_this_process(
        store: Any) -> None:
    woken = []
    for write in (lambda: create(store, saga(), messages=({"n": 1},)),
                  lambda: store.commit(step("s1", 2, "book", "pay", messages=({"n": 2},))),
                  lambda: store.participant_apply("hotel", "s1", "m1", {}, [{"n": 3}]),
                  lambda: store.commit(step("s1", 3, "pay", "ship"))):
        armed = store.outbox_signal.arm()
        await write()
        woken.append(armed.done())

    assert [True, True, True, False] == woken  # the last commit wrote no message


async def test_error_texts_with_a_lone_surrogate_or_nul_are_stored_escaped(store: Any) -> None:
    bad = "boom \ud800 and \x00 in it"
    shown = "boom \\ud800 and \\x00 in it"
    failed = Transition(T0, "book", "book", "retry", "book", 1, bad, 0.5, reason=bad)
    await create(store, attrs.evolve(saga(), error=bad, history=(*saga().history, failed),
                                     revision=2))
    await store.commit(step("s1", 3, "book", "pay", error=bad))
    await store.request_abort("s1", bad)

    loaded = await store.load("s1")

    assert [None, shown, shown] == [t.error for t in loaded.history]
    assert [None, shown, None] == [t.reason for t in loaded.history]
    assert shown == loaded.error
    assert shown == (await store.commit(step("s1", 4, "pay", "ship"))).abort
