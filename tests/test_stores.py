"""One conformance suite for every store (memory, SQLite, PostgreSQL), then each one's faults."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import structlog

from statesaga import (
    InMemoryStore,
    Orchestrator,
    SagaConflict,
    SagaError,
    SagaNotFound,
    SagaRecord,
    SagaStatus,
    StoreError,
    Transition,
)
from statesaga.examples.trip import build_trip, trip_services
from statesaga.exceptions import DuplicateMessage
from statesaga.stores._sql import SCHEMA_VERSION
from statesaga.stores.base import Commit, SagaStore
from statesaga.stores.postgres import PostgresStore
from statesaga.stores.sqlite import SQLiteStore
from statesaga.stores.urls import open_store, redact

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TRICKY_IDS = ["it's", 'say "hi"', "x'); DROP TABLE sagas; --", "%_\\", "ünï 👍"]


@attrs.define
class Backend:
    """One kind of store under test, with raw SQL access to what it wrote."""

    kind: str
    path: Path | None = None
    dsn: str = ""
    schema: str = ""
    stores: list[SagaStore] = attrs.Factory(list)

    def store(self, **options: Any) -> Any:
        if self.kind == "memory":
            store: Any = InMemoryStore()
        elif self.kind == "sqlite":
            assert self.path is not None
            store = SQLiteStore(self.path, **options)
        else:
            store = PostgresStore(self.dsn, schema=self.schema, **options)
        self.stores.append(store)
        return store

    async def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run `query` ($1-style parameters) on the database itself, outside the store."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(str(self.path), isolation_level=None)
            try:
                return conn.execute(re.sub(r"\$(\d+)", r"?\1", query), args).fetchall()
            finally:
                conn.close()
        import asyncpg

        conn2 = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        try:
            return [tuple(row) for row in await conn2.fetch(query, *args)]
        finally:
            await conn2.close()

    async def transitions(self, store: Any, saga_id: str) -> int:
        """How many transition rows the store holds for `saga_id`."""
        if self.kind == "memory":
            return len(store._rows[saga_id].history)
        rows = await self.sql("SELECT count(*) FROM transitions WHERE saga_id = $1", saga_id)
        count: int = rows[0][0]
        return count


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "postgres":
        return Backend(kind, dsn=request.getfixturevalue("postgres_dsn"),
                       schema=request.getfixturevalue("pg_schema"))
    return Backend(kind, path=tmp_path / "sagas.db")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request.param, request, tmp_path)


@pytest.fixture
async def backend(any_backend: Backend) -> AsyncIterator[Backend]:
    yield any_backend
    for store in any_backend.stores:
        await store.close()


@pytest.fixture
async def durable(durable_backend: Backend) -> AsyncIterator[Backend]:
    yield durable_backend
    for store in durable_backend.stores:
        await store.close()


@pytest.fixture
def store(backend: Backend) -> Any:
    return backend.store()


def saga(saga_id: str = "s1", *, name: str = "trip", version: str = "v1", at: datetime = T0,
         status: SagaStatus = SagaStatus.RUNNING, data: dict[str, Any] | None = None,
         deadline_at: datetime | None = None, worker: str | None = "w1") -> SagaRecord:
    return SagaRecord(
        saga_id=saga_id, name=name, version=version, state="book", status=status,
        data={"flight": "LH1"} if data is None else data, results={}, error=None,
        history=(Transition(at, None, "book", "start", worker=worker),), created_at=at,
        updated_at=at,
        revision=1, deadline_at=deadline_at)


async def create(store: SagaStore, record: SagaRecord, *, owner: str | None = "w1",
                 lease_until: float | None = None, waiting: bool = False,
                 messages: tuple[Any, ...] = (), wake_at: float | None = None) -> SagaRecord:
    await store.create(record, data_json=_json(record.data), owner=owner,
                       lease_until=lease_until, waiting=waiting, messages=messages,
                       wake_at=wake_at)
    return record


def _json(value: Any) -> str:
    import json

    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def count_calls(store: Any, *names: str) -> Counter[str]:
    """Count the calls of `store`'s methods `names` (each one a transaction)."""
    calls: Counter[str] = Counter()

    def spy(name: str) -> Any:
        method = getattr(store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await method(*args, **kwargs)
        return counted

    for name in names:
        setattr(store, name, spy(name))
    return calls


def step(saga_id: str, revision: int, source: str, dest: str, *, result: Any = None,
         status: SagaStatus = SagaStatus.RUNNING, owner: str | None = "w1",
         lease_until: float | None = None, messages: tuple[Any, ...] = (),
         waiting: bool = False, wake_at: float | None = None, inbox: str | None = None,
         worker: str | None = "w1") -> Commit:
    at = T0 + timedelta(seconds=revision)
    return Commit(
        saga_id=saga_id, revision=revision, state=dest, status=status, error=None,
        transition=Transition(at, source, dest, "succeed", source, 1, None, 0.25,
                              worker=worker),
        result=None if result is None else _json(result), owner=owner,
        lease_until=lease_until, messages=messages, waiting=waiting, wake_at=wake_at,
        inbox=inbox)


# -- the conformance suite: every store ---------------------------------------------------


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
    await create(store, saga(), owner="w1", lease_until=10)

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


async def test_renew_extends_only_the_owners_leases_and_release_frees_them(
        store: Any) -> None:
    for saga_id in ("a", "b"):
        await create(store, saga(saga_id), owner=None)
    await store.claim("w1", now=0, lease=10, limit=2)

    await store.renew("w1", ["a"], until=100)
    await store.renew("w2", ["b"], until=100)  # not w2's: no effect

    assert ["b"] == [r.saga_id for r in await store.claim("w2", now=50, lease=10, limit=5)]
    await store.release("w2", ["a"])  # not w2's: no effect
    assert [] == await store.claim("w3", now=50, lease=10, limit=5)
    await store.release("w1", ["a"])
    assert ["a"] == [r.saga_id for r in await store.claim("w3", now=50, lease=10, limit=5)]


async def test_an_abort_request_is_returned_by_every_following_commit(store: Any) -> None:
    await create(store, saga())
    assert None is await store.commit(step("s1", 2, "book", "pay"))

    await store.request_abort("s1", "customer cancelled")

    assert "customer cancelled" == await store.commit(step("s1", 3, "pay", "ship"))
    assert "customer cancelled" == await store.commit(step("s1", 4, "ship", "ship"))


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
    assert saga_id == await store.commit(step(saga_id, 4, "pay", "ship", owner=saga_id))


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


async def test_outbox_messages_wait_oldest_first_until_marked_sent(store: Any) -> None:
    await create(store, saga(), messages=({"n": 1},))
    await store.commit(step("s1", 2, "book", "pay", messages=({"n": 2}, {"n": 3})))

    pending = await store.pending_messages()
    await store.mark_sent([i for i, _ in pending[:2]])

    assert ['{"n":1}', '{"n":2}', '{"n":3}'] == [m for _, m in pending]
    assert sorted(i for i, _ in pending) == [i for i, _ in pending]
    assert [pending[2]] == await store.pending_messages()
    assert [pending[2]] == await store.pending_messages(limit=1)


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


async def test_a_participant_applies_each_message_once(store: Any) -> None:
    assert None is await store.participant_state("hotel", "s1")

    first = await store.participant_apply("hotel", "s1", "m1", {"rooms": 1},
                                          [{"type": "booked"}])
    again = await store.participant_apply("hotel", "s1", "m1", {"rooms": 2},
                                          [{"type": "booked"}])
    other = await store.participant_apply("flights", "s1", "m1", {"seats": 1}, [])

    assert (True, False, True) == (first, again, other)
    assert {"rooms": 1} == await store.participant_state("hotel", "s1")
    assert ['{"type":"booked"}'] == [m for _, m in await store.pending_messages()]
    assert await store.participant_apply("hotel", "s1", "m2", {"rooms": 3}, [])
    assert {"rooms": 3} == await store.participant_state("hotel", "s1")


# -- the durable stores: what they keep, and what they do with bad rows ----------------------


async def test_sagas_survive_closing_and_reopening_the_store(durable: Backend) -> None:
    first = durable.store()
    await first.open()
    assert [(SCHEMA_VERSION,)] == await durable.sql("SELECT version FROM schema_version")
    await create(first, saga())
    await first.commit(step("s1", 2, "book", "pay", result={"ok": True}))
    await first.close()

    loaded = await durable.store().load("s1")

    assert ("pay", {"book": {"ok": True}}) == (loaded.state, dict(loaded.results))
    assert [(SCHEMA_VERSION,)] == await durable.sql("SELECT version FROM schema_version")


async def test_messages_are_written_to_the_outbox_only_with_their_transition(
        durable: Backend) -> None:
    store = durable.store()
    event = saga("evt")  # any attrs record
    await create(store, saga(), messages=({"type": "started"},))
    await store.commit(step("s1", 2, "book", "pay", messages=(event, {"type": "paid"})))
    with pytest.raises(SagaConflict):
        await store.commit(step("s1", 2, "book", "pay", messages=({"type": "lost"},)))

    rows = await durable.sql("SELECT saga_id, message, sent_at FROM outbox ORDER BY id")

    assert [("s1", None)] * 3 == [(r[0], r[2]) for r in rows]
    assert ['{"type":"started"}', '{"type":"paid"}'] == [rows[0][1], rows[2][1]]
    assert '"saga_id":"evt"' in rows[1][1]


@pytest.mark.parametrize("data", ["{oops", "[1, 2]"])
async def test_a_corrupt_row_fails_its_load_and_is_skipped_by_list_and_claim(
        durable: Backend, data: str) -> None:
    store = durable.store()
    for i, saga_id in enumerate(("bad", "good")):
        await create(store, saga(saga_id, at=T0 + timedelta(seconds=i)), owner=None)
    await durable.sql("UPDATE sagas SET data = $1 WHERE saga_id = $2", data, "bad")

    with pytest.raises(StoreError, match=r"'bad'.*corrupt") as raised:
        await store.load("bad")
    with structlog.testing.capture_logs() as logs:
        listed = await store.list()
        claimed = await store.claim("w1", now=0, lease=10, limit=1)  # the oldest is corrupt

    assert "bad" == raised.value.saga_id
    assert (["good"], ["good"]) == ([r.saga_id for r in listed], [r.saga_id for r in claimed])
    assert [("saga.corrupt_row", "bad", "error")] * 2 == [
        (e["event"], e["saga_id"], e["log_level"]) for e in logs]
    with pytest.raises(StoreError, match="corrupt"):
        await store.claim("op", now=100, lease=10, limit=1, saga_id="bad")


async def test_a_participant_state_that_is_not_json_consumes_nothing(
        durable: Backend) -> None:
    store = durable.store()

    with pytest.raises(SagaError, match="hotel's state cannot be stored"):
        await store.participant_apply("hotel", "s1", "m1", {"when": T0}, [{"type": "x"}])

    assert await store.participant_apply("hotel", "s1", "m1", {"ok": True}, [])
    assert [] == await store.pending_messages()
    await durable.sql("UPDATE participants SET state = $1", "{oops")
    with pytest.raises(StoreError, match=r"participant 'hotel'.*corrupt"):
        await store.participant_state("hotel", "s1")


async def test_a_corrupt_result_fails_the_load_naming_the_saga(durable: Backend) -> None:
    store = durable.store()
    await create(store, saga())
    await store.commit(step("s1", 2, "book", "pay", result={"ok": True}))
    await durable.sql("UPDATE transitions SET result = $1 WHERE saga_id = $2", "[1,", "s1")

    with pytest.raises(StoreError, match="saga 's1'"):
        await store.load("s1")


async def test_a_store_with_a_newer_schema_refuses_to_open_and_writes_nothing(
        durable: Backend) -> None:
    first = durable.store()
    await create(first, saga())
    await first.close()
    await durable.sql("UPDATE schema_version SET version = 99")

    newer = durable.store()
    with pytest.raises(StoreError,
                       match=rf"schema version 99.*version {SCHEMA_VERSION} at most.*upgrade"):
        await newer.load("s1")
    with pytest.raises(StoreError, match="schema version 99"):
        await create(newer, saga("s2"))

    assert [(1,)] == await durable.sql("SELECT count(*) FROM sagas")
    assert [(99,)] == await durable.sql("SELECT version FROM schema_version")


async def test_a_failing_write_rolls_the_whole_commit_back(durable: Backend) -> None:
    store = durable.store()
    await create(store, saga())
    if durable.kind == "sqlite":
        await durable.sql("CREATE TRIGGER boom BEFORE INSERT ON transitions WHEN "
                          "NEW.dest = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END")
    else:
        await durable.sql("ALTER TABLE transitions ADD CONSTRAINT boom CHECK (dest <> 'boom')")

    with pytest.raises(StoreError, match="rolled back"):
        await store.commit(step("s1", 2, "book", "boom", messages=({"type": "x"},)))

    loaded = await store.load("s1")
    assert ("book", 1, 1) == (loaded.state, loaded.revision, len(loaded.history))
    assert [(0,)] == await durable.sql("SELECT count(*) FROM outbox")
    await store.commit(step("s1", 2, "book", "pay"))


# -- SQLite -------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "message"), [
    ({"durability": "paranoid"}, "'full' or 'normal'"), ({"busy_timeout": -1}, ">= 0")])
def test_sqlite_rejects_bad_options(tmp_path: Path, options: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SQLiteStore(tmp_path / "s.db", **options)


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("normal", 1)])
async def test_sqlite_uses_wal_and_the_synchronous_level_of_its_durability(
        tmp_path: Path, durability: str, synchronous: int) -> None:
    store = SQLiteStore(tmp_path / "s.db", durability=durability)
    try:
        await create(store, saga())
        conn = store._conn
        assert conn is not None
        assert ("wal", synchronous) == (conn.execute("PRAGMA journal_mode").fetchone()[0],
                                        conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await store.close()


async def test_two_sqlite_stores_on_one_file_let_only_one_writer_win(tmp_path: Path) -> None:
    one, two = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    try:
        await create(one, saga(), owner=None)
        assert 1 == (await two.load("s1")).revision

        await one.commit(step("s1", 2, "book", "pay"))
        with pytest.raises(SagaConflict):
            await two.commit(step("s1", 2, "book", "ship"))
        assert ["s1"] == [r.saga_id for r in await two.claim("w2", now=0, lease=9, limit=1)]
        assert [] == await one.claim("w1", now=1, lease=9, limit=1)
        assert ("pay", 3) == ((loaded := await one.load("s1")).state, loaded.revision)
    finally:
        await one.close()
        await two.close()


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


async def test_a_sqlite_file_locked_past_the_busy_timeout_raises_and_writes_nothing(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=0.2)
    await create(store, saga())
    locker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCKER, str(tmp_path / "s.db"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert locker.stdin is not None
    assert locker.stdout is not None
    try:
        assert b"locked\n" == await locker.stdout.readline()
        with pytest.raises(StoreError, match=r"locked.*busy_timeout=0\.2s"):
            await store.commit(step("s1", 2, "book", "pay"))
        with pytest.raises(StoreError, match="locked"):  # a store opening it waits as long
            await SQLiteStore(tmp_path / "s.db", busy_timeout=0.1).load("s1")
    finally:
        locker.stdin.close()
        await locker.wait()

    assert 1 == (await store.load("s1")).revision
    await store.commit(step("s1", 2, "book", "pay"))  # resumed: the same commit goes through
    assert 2 == (await store.load("s1")).revision
    await store.close()


async def test_a_full_disk_raises_and_rolls_the_whole_transition_back(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await create(store, saga())
    conn = store._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}").fetchall()  # the disk is now full
    big = step("s1", 2, "book", "pay", result={"blob": "x" * 100_000})

    with pytest.raises(StoreError, match=r"full.*rolled back.*free disk space"):
        await store.commit(big)

    assert (1, "book", 1) == ((r := await store.load("s1")).revision, r.state, len(r.history))
    conn.execute("PRAGMA max_page_count = 1073741823").fetchall()
    await store.commit(big)
    assert {"book": {"blob": "x" * 100_000}} == (await store.load("s1")).results
    await store.close()


async def test_a_sqlite_path_that_cannot_be_opened_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the saga store"):
        await SQLiteStore(tmp_path / "missing" / "dir" / "s.db").load("s1")


# -- PostgreSQL ---------------------------------------------------------------------------


async def test_an_unreachable_postgres_raises_store_error_with_the_password_hidden() -> None:
    store = PostgresStore("postgresql://app:s3cret@127.0.0.1:1/sagas", connect_timeout=5)

    with pytest.raises(StoreError, match="cannot connect") as raised:
        await store.load("s1")

    assert "postgresql://app:***@127.0.0.1:1/sagas" in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert isinstance(raised.value.__cause__, OSError)


def test_postgres_refuses_a_schema_that_is_not_an_identifier() -> None:
    with pytest.raises(ValueError, match="identifier"):
        PostgresStore("postgresql://localhost/db", schema='x"; DROP SCHEMA public; --')


async def test_postgres_keeps_its_tables_in_its_own_schema(postgres_dsn: str,
                                                           pg_schema: str) -> None:
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    await store.open()
    await store.close()
    backend = Backend("postgres", dsn=postgres_dsn, schema=pg_schema)

    tables = await backend.sql("SELECT table_name FROM information_schema.tables WHERE "
                               "table_schema = $1 ORDER BY 1", pg_schema)

    assert ["inbox", "outbox", "participants", "sagas", "schema_version", "transitions"] == [
        t for (t,) in tables]


async def test_two_postgres_workers_claiming_at_once_never_share_a_saga(
        postgres_dsn: str, pg_schema: str) -> None:
    one, two = (PostgresStore(postgres_dsn, schema=pg_schema) for _ in range(2))
    try:
        for i in range(20):
            await create(one, saga(f"s{i}"), owner=None)
        batches = await asyncio.gather(*(
            store.claim(f"w{i}", now=0, lease=60, limit=3) for i in range(6)
            for store in (one, two)))
        taken = [r.saga_id for batch in batches for r in batch]
        assert sorted(taken) == sorted(set(taken))
        assert 20 == len(taken)
    finally:
        await one.close()
        await two.close()


async def test_more_postgres_calls_at_once_than_pooled_connections_all_finish(
        postgres_dsn: str, pg_schema: str) -> None:
    store = PostgresStore(postgres_dsn, schema=pg_schema, min_size=1, max_size=2)
    try:
        await create(store, saga())

        loads = await asyncio.wait_for(  # a connection kept idle must not starve a waiter
            asyncio.gather(*(store.load("s1") for _ in range(8))), 30)

        assert [1] * 8 == [r.revision for r in loads]
        assert len(store._idle) <= 2
    finally:
        await store.close()


async def test_a_killed_postgres_connection_costs_at_most_one_failed_call(
        postgres_dsn: str, pg_schema: str) -> None:
    store = PostgresStore(postgres_dsn, schema=pg_schema, min_size=1, max_size=1)
    backend = Backend("postgres", dsn=postgres_dsn, schema=pg_schema)
    try:
        await create(store, saga())
        (conn,) = store._idle
        await backend.sql("SELECT pg_terminate_backend($1)", conn.get_server_pid())

        outcomes = []
        for _ in range(2):  # the first call may still pick the dead connection
            try:
                await store.commit(step("s1", 2, "book", "pay"))
            except StoreError:
                outcomes.append("StoreError")
            else:
                outcomes.append("ok")
                break

        assert outcomes in (["ok"], ["StoreError", "ok"])
        assert 2 == (await store.load("s1")).revision
    finally:
        await store.close()


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "kind", "where"), [
    ("memory://", InMemoryStore, None),
    ("sqlite:///relative/sagas.db", SQLiteStore, ("relative/sagas.db", "full")),
    ("sqlite:////abs/sagas.db?durability=normal", SQLiteStore, ("/abs/sagas.db", "normal")),
    ("postgresql://u:pw@db:5432/app?schema=billing&sslmode=disable", PostgresStore,
     ("postgresql://u:pw@db:5432/app?sslmode=disable", "billing")),
    ("postgres://db/app", PostgresStore, ("postgres://db/app", "statesaga")),
])
def test_open_store_maps_each_url_to_its_store(url: str, kind: type, where: Any) -> None:
    store = open_store(url)

    assert kind is type(store)
    if isinstance(store, SQLiteStore):
        assert where == (store.path, store.durability)
        assert url == store.url
    elif isinstance(store, PostgresStore):
        assert where == (store.dsn, store.schema)
        assert "pw" not in store.url


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://db/app", "memory://, sqlite:///relative/path.db"),
    ("sagas.db", "supported"),
    ("sqlite://sagas.db", "three slashes"),
    ("sqlite:///s.db?durability=yolo", "'full' or 'normal'"),
    ("sqlite:///s.db?synchronous=off", "unknown option 'synchronous'"),
    ("postgresql://u:hunter2@db/app?schema=a-b", "identifier"),
])
def test_open_store_rejects_a_url_it_cannot_use(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)) as raised:
        open_store(url)

    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(("url", "redacted"), [
    ("postgresql://app:s3cret@db:5432/sagas", "postgresql://app:***@db:5432/sagas"),
    ("postgresql://app:p@ss@db/sagas", "postgresql://app:***@db/sagas"),
    ("postgresql://app@db/sagas?password=s3cret&sslmode=require",
     "postgresql://app@db/sagas?password=***&sslmode=require"),
    ("postgresql://db/sagas", "postgresql://db/sagas"),
    ("sqlite:////var/lib/sagas.db", "sqlite:////var/lib/sagas.db"),
    ("memory://", "memory://"),
])
def test_redact_replaces_a_password_with_stars(url: str, redacted: str) -> None:
    assert redacted == redact(url)


def test_importing_statesaga_and_its_stores_does_not_import_asyncpg() -> None:
    code = ("import sys, statesaga, statesaga.stores.postgres, statesaga.stores.urls; "
            "print('asyncpg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)

    assert "False" == out.stdout.strip()
