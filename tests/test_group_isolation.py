"""Group commit isolates: a write the database refuses fails only its own saga, and leaves
nothing of that saga written, however many sagas share its transaction (SQLite, PostgreSQL).

The bad values here are built by hand, past the codec's checks, so that the database itself
(or its driver) refuses them, as it would a value some future code path forgot to check.
"""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
from storekit import T0, Backend, create, saga, step

from statesaga import SagaStatus, Transition
from statesaga.stores.base import Signals

LONE_SURROGATE = '{"note":"\ud800"}'  # JSON text no UTF-8 database can hold


def _store(durable: Backend) -> Any:
    return durable.store(max_size=16) if durable.kind == "postgres" else durable.store()


def _failed(ids: list[str], outcomes: list[Any]) -> dict[str, str]:
    return {i: type(o).__name__ for i, o in zip(ids, outcomes, strict=True)
            if isinstance(o, BaseException)}


@pytest.mark.parametrize("bad", [0, 17])  # alone, or in a batch
async def test_one_create_whose_data_the_database_refuses_fails_alone_and_leaves_nothing(
        durable: Backend, bad: int) -> None:
    store = _store(durable)
    ids = [f"s{i}" for i in range(30)]

    outcomes = await asyncio.gather(*(
        create(store, saga(i), now=0, lease=60,
               data_json=LONE_SURROGATE if n == bad else None)
        for n, i in enumerate(ids)), return_exceptions=True)

    assert {ids[bad]: "StoreRefused"} == _failed(ids, outcomes)
    assert sorted(set(ids) - {ids[bad]}) == await durable.sagas(store)
    assert 0 == await durable.transitions(store, ids[bad])
    for i in set(ids) - {ids[bad]}:
        assert saga(i) == await store.load(i)


async def test_a_nul_in_one_saga_id_fails_only_that_saga_on_postgres(
        postgres_dsn: str, pg_schema: str) -> None:
    durable = Backend("postgres", dsn=postgres_dsn, schema=pg_schema)
    store = _store(durable)
    try:
        ids = [f"s{i}" if i != 15 else "s\x0015" for i in range(31)]

        outcomes = await asyncio.gather(*(create(store, saga(i), now=0, lease=60)
                                          for i in ids), return_exceptions=True)

        assert {"s\x0015": "StoreRefused"} == _failed(ids, outcomes)
        assert sorted(set(ids) - {"s\x0015"}) == await durable.sagas(store)
    finally:
        await store.close()


async def test_one_commit_whose_result_the_database_refuses_fails_alone_and_leaves_nothing(
        durable: Backend) -> None:
    store = _store(durable)
    ids = [f"s{i}" for i in range(16)]
    for i in ids:
        await create(store, saga(i))

    outcomes = await asyncio.gather(*(
        store.commit(step(i, 2, "book", "pay", result_json=LONE_SURROGATE if i == "s9"
                          else '{"ok":true}')) for i in ids), return_exceptions=True)

    assert {"s9": "StoreRefused"} == _failed(ids, outcomes)
    assert [Signals()] * 15 == [o for o in outcomes if not isinstance(o, BaseException)]
    assert (1, "book", {}) == ((r := await store.load("s9")).revision, r.state, r.results)
    assert 1 == await durable.transitions(store, "s9")
    for i in set(ids) - {"s9"}:
        assert (2, {"book": {"ok": True}}) == ((r := await store.load(i)).revision, r.results)


async def test_any_error_of_one_sagas_write_fails_only_that_saga(durable: Backend) -> None:
    store = _store(durable)
    await store.open()
    if durable.kind == "sqlite":
        await durable.sql("CREATE TRIGGER boom BEFORE INSERT ON transitions WHEN "
                          "NEW.dest = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END")
    else:
        await durable.sql("ALTER TABLE transitions ADD CONSTRAINT boom CHECK (dest <> 'boom')")
    ids = [f"s{i}" for i in range(10)]
    refused = attrs.evolve(saga("s5"), state="boom",
                           history=(Transition(T0, None, "boom", "start", worker="w1"),))

    created = await asyncio.gather(*(  # the saga's row is written, then its transition fails
        create(store, refused if i == "s5" else saga(i)) for i in ids), return_exceptions=True)
    ids.remove("s5")
    batches = store.batches
    committed = await asyncio.gather(*(
        store.commit(step(i, 2, "book", "boom" if i == "s3" else "pay")) for i in ids),
        return_exceptions=True)

    assert {"s5": "StoreRefused"} == _failed([f"s{i}" for i in range(10)], created)
    assert {"s3": "StoreRefused"} == _failed(ids, committed)
    assert "boom" in str(created[5])
    assert ids == await durable.sagas(store)
    assert store.batches - batches < len(ids)  # the commits were grouped
    assert [1 if i == "s3" else 2 for i in ids] == [
        await durable.transitions(store, i) for i in ids]
    assert [SagaStatus.RUNNING] * 9 == [(await store.load(i)).status for i in ids]
