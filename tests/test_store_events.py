"""The outside-event queue on every store: queued durably, once per message, then consumed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from storekit import Backend, create, saga, step

from statesaga import InvalidSagaData, PostgresStore, SagaConflict, SagaNotFound
from statesaga.stores.base import Signals


async def test_queued_events_come_back_in_arrival_order_with_their_payloads(
        store: Any) -> None:
    await create(store, saga())
    for i, (m, kind) in enumerate([("m3", "Paid"), ("m1", "Shipped"), ("m2", "Paid")]):
        assert await store.enqueue_event("s1", m, kind, f'{{"n":{i}}}', now=100 + i)

    queued = await store.queued_events("s1")

    assert [("m3", "Paid", {"n": 0}), ("m1", "Shipped", {"n": 1}), ("m2", "Paid", {"n": 2})
            ] == [(e.message_id, e.type, e.payload) for e in queued]
    assert [datetime.fromtimestamp(100 + i, UTC) for i in range(3)] == [
        e.received_at for e in queued]
    assert sorted(e.seq for e in queued) == [e.seq for e in queued]
    assert [] == await store.queued_events("other")


async def test_an_event_queued_before_or_consumed_before_is_not_queued_again(
        store: Any) -> None:
    await create(store, saga())
    first = await store.enqueue_event("s1", "m1", "Paid", '{"try":1}')
    again = await store.enqueue_event("s1", "m1", "Paid", '{"try":2}')
    (queued,) = await store.queued_events("s1")

    await store.commit(step("s1", 2, "book", "pay", inbox="m1", consumed=queued.seq))
    after = await store.enqueue_event("s1", "m1", "Paid", '{"try":3}')

    assert (True, False, False) == (first, again, after)
    assert {"try": 1} == queued.payload
    assert [] == await store.queued_events("s1")


async def test_an_event_for_no_saga_raises_not_found_and_queues_nothing(
        backend: Backend, store: Any) -> None:
    with pytest.raises(SagaNotFound):
        await store.enqueue_event("nope", "m1", "Paid", "{}")

    assert [] == await store.queued_events("nope")
    if backend.kind != "memory":
        assert [(0,)] == await backend.sql("SELECT count(*) FROM events")


@pytest.mark.parametrize(("message_id", "kind", "payload"), [
    ("m\x001", "Paid", "{}"), ("", "Paid", "{}"), ("m1", "Pa\ud800id", "{}"),
    ("m1", "Paid", "[1]"), ("m1", "Paid", "{oops")])
async def test_an_event_whose_id_type_or_payload_cannot_be_stored_is_refused(
        store: Any, message_id: str, kind: str, payload: str) -> None:
    await create(store, saga())

    with pytest.raises(InvalidSagaData):
        await store.enqueue_event("s1", message_id, kind, payload)

    assert [] == await store.queued_events("s1")


async def test_a_commit_consuming_an_event_deletes_it_only_if_the_commit_lands(
        store: Any) -> None:
    await create(store, saga())
    await store.enqueue_event("s1", "m1", "Paid", "{}")
    await store.enqueue_event("s1", "m2", "Paid", "{}")
    m1, m2 = await store.queued_events("s1")

    with pytest.raises(SagaConflict):  # a stale writer: nothing of it is written
        await store.commit(step("s1", 7, "book", "pay", inbox="m1", consumed=m1.seq))
    assert [m1, m2] == await store.queued_events("s1")
    signals = await store.commit(step("s1", 2, "book", "pay", inbox="m1", consumed=m1.seq))

    assert Signals(events=1) == signals
    assert [m2] == await store.queued_events("s1")
    assert "m1" not in [e.message_id for e in await store.queued_events("s1")]


async def test_a_batch_claim_takes_a_waiting_saga_once_an_event_is_queued_for_it(
        store: Any) -> None:
    await create(store, saga("waits"), owner=None, waiting=True)
    await create(store, saga("other", name="pay"), owner=None, waiting=True)
    assert [] == await store.claim("w1", now=0, lease=10, limit=5)

    await store.enqueue_event("waits", "m1", "Paid", "{}")
    await store.enqueue_event("other", "m2", "Paid", "{}")

    claimed = await store.claim("w1", now=0, lease=10, limit=5,
                                definitions=[("trip", "v1")])
    assert ["waits"] == [r.saga_id for r in claimed]
    assert [] == await store.claim("w2", now=5, lease=10, limit=5,
                                   definitions=[("trip", "v1")])  # leased: not twice
    assert ["other"] == [r.saga_id for r in await store.claim("w2", now=5, lease=10,
                                                               limit=5)]


async def test_an_event_queued_while_a_commit_consumes_it_on_postgres_is_not_queued_again(
        postgres_dsn: str, pg_schema: str) -> None:
    """The race a single statement loses: the consuming commit deletes the queued row and
    writes the inbox row; an insert waiting on that deleted row would then queue it again."""
    import asyncpg

    async with PostgresStore(postgres_dsn, schema=pg_schema) as store:
        await create(store, saga())
        await store.enqueue_event("s1", "m1", "Paid", "{}")
        consumer = await asyncpg.connect(postgres_dsn,
                                         server_settings={"search_path": pg_schema})
        try:
            await consumer.execute("BEGIN")  # a commit consuming m1, not yet committed
            await consumer.execute("UPDATE sagas SET revision = 2 WHERE saga_id = 's1'")
            await consumer.execute("DELETE FROM events WHERE message_id = 'm1'")
            await consumer.execute("INSERT INTO inbox VALUES ('saga', 'm1', 's1', now())")
            again = asyncio.ensure_future(store.enqueue_event("s1", "m1", "Paid", "{}"))
            await asyncio.wait_for(waiting_for_a_lock(postgres_dsn, pg_schema), 60)
            await consumer.execute("COMMIT")
            queued_again = await asyncio.wait_for(again, 30)
        finally:
            await consumer.close()

        assert (False, []) == (queued_again, await store.queued_events("s1"))


async def waiting_for_a_lock(dsn: str, schema: str) -> None:
    """Until a statement on `schema` waits for a lock (seen from a connection of its own: in
    a transaction, PostgreSQL shows the same picture of pg_stat_activity every time)."""
    import asyncpg

    watcher = await asyncpg.connect(dsn)
    try:
        while not await watcher.fetchval(  # noqa: ASYNC110
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE $1", f"%{schema}%"):
            await asyncio.sleep(0.01)
    finally:
        await watcher.close()
