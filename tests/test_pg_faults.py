"""PostgreSQL's connection faults, through a real TCP proxy: a write whose outcome is unknown
says so (and a reload shows the truth), and no error or attribute ever shows the password."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from storekit import create, saga, step
from tcp_proxy import TcpProxy

from statesaga import CommitOutcomeUnknown, PostgresStore, StoreError
from statesaga.stores.base import Signals

WAIT = 60.0  # a guard against hangs, never a measure
SECRET = "s3cr3t-pw"


@pytest.fixture
async def proxy(postgres_dsn: str) -> AsyncIterator[TcpProxy]:
    started = await TcpProxy("127.0.0.1", 5432).start()
    yield started
    await started.close()


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async def poll() -> None:
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    await asyncio.wait_for(poll(), WAIT)


async def revisions(dsn: str, schema: str, *saga_ids: str) -> list[int]:
    """The sagas' revisions read straight from the database (not through the proxy)."""
    conn = await asyncpg.connect(dsn)
    try:
        return [await conn.fetchval(f'SELECT revision FROM "{schema}".sagas WHERE '
                                    "saga_id = $1", i) for i in saga_ids]
    finally:
        await conn.close()


@pytest.mark.parametrize("write", ["commit", "create"])
async def test_a_write_cut_off_after_it_reached_the_server_is_an_unknown_outcome_and_stored(
        postgres_dsn: str, pg_schema: str, proxy: TcpProxy, write: str) -> None:
    store = PostgresStore(proxy.dsn(postgres_dsn), schema=pg_schema, min_size=1, max_size=1)
    try:
        await create(store, saga())  # both statements are prepared now
        await store.commit(step("s1", 2, "book", "pay"))
        proxy.pause(up=False, down=True)  # requests reach the server; no reply comes back
        saga_id, expected = ("s1", (3, "ship")) if write == "commit" else ("s2", (1, "book"))
        cut = asyncio.ensure_future(store.commit(step("s1", 3, "pay", "ship"))
                                    if write == "commit" else create(store, saga("s2")))
        await until(lambda: _is([expected[0]], revisions(postgres_dsn, pg_schema, saga_id)))
        proxy.drop()

        with pytest.raises(CommitOutcomeUnknown) as raised:
            await asyncio.wait_for(cut, WAIT)
        proxy.resume()
        reloaded = await store.load(saga_id)  # the same store: a new connection

        assert "may or may not have been stored" in str(raised.value)
        assert "nothing was" not in str(raised.value)
        assert expected == (reloaded.revision, reloaded.state)
    finally:
        await store.close()


async def test_a_commit_cut_off_before_it_reached_the_server_is_an_unknown_outcome_not_stored(
        postgres_dsn: str, pg_schema: str, proxy: TcpProxy) -> None:
    store = PostgresStore(proxy.dsn(postgres_dsn), schema=pg_schema, min_size=1, max_size=1)
    try:
        await create(store, saga())
        await store.commit(step("s1", 2, "book", "pay"))
        proxy.pause(up=True, down=False)  # the request waits in the proxy
        commit = asyncio.ensure_future(store.commit(step("s1", 3, "pay", "ship")))
        await until(lambda: _true(proxy.held() > 0))
        proxy.drop()

        with pytest.raises(CommitOutcomeUnknown):
            await asyncio.wait_for(commit, WAIT)
        proxy.resume()

        assert (2, "pay") == ((r := await store.load("s1")).revision, r.state)
        assert Signals() == await store.commit(step("s1", 3, "pay", "ship"))  # resumed
    finally:
        await store.close()


async def test_a_grouped_batch_cut_off_after_it_reached_the_server_is_unknown_for_each_saga(
        postgres_dsn: str, pg_schema: str, proxy: TcpProxy) -> None:
    store = PostgresStore(proxy.dsn(postgres_dsn), schema=pg_schema)
    ids = [f"s{i}" for i in range(6)]
    try:
        for i in ids:
            await create(store, saga(i))
        for rev, (source, dest) in enumerate([("book", "pay"), ("pay", "ship")], start=2):
            await asyncio.gather(*(store.commit(step(i, rev, source, dest)) for i in ids))
        # s0 writes alone; the other five go as one batch on a batch connection
        proxy.pause(up=False, down=True)
        commits = [asyncio.ensure_future(store.commit(step(i, 4, "ship", "done")))
                   for i in ids]
        await until(lambda: _is([4] * 6, revisions(postgres_dsn, pg_schema, *ids)))
        proxy.drop()
        outcomes = await asyncio.wait_for(asyncio.gather(*commits, return_exceptions=True),
                                          WAIT)
        proxy.resume()

        assert 6 * ["CommitOutcomeUnknown"] == [type(o).__name__ for o in outcomes]
        assert 6 * [4] == [(await store.load(i)).revision for i in ids]
    finally:
        await store.close()


async def test_a_store_whose_connections_are_refused_raises_and_writes_nothing(
        postgres_dsn: str, pg_schema: str, proxy: TcpProxy) -> None:
    proxy.refuse()
    store = PostgresStore(proxy.dsn(postgres_dsn), schema=pg_schema, connect_timeout=5)

    with pytest.raises(StoreError, match="cannot connect") as raised:
        await create(store, saga())

    assert not isinstance(raised.value, CommitOutcomeUnknown)  # nothing was ever sent
    proxy.refuse(False)
    try:
        assert [] == await store.list()
    finally:
        await store.close()


@pytest.mark.parametrize("where", ["user", "query"])
async def test_a_postgres_store_never_shows_its_password(
        postgres_dsn: str, pg_schema: str, proxy: TcpProxy, where: str) -> None:
    url = proxy.dsn(postgres_dsn.replace("postgres@", f"postgres:{SECRET}@")
                    if where == "user" else f"{postgres_dsn}?password={SECRET}")
    store = PostgresStore(url, schema=pg_schema, min_size=1, max_size=1)
    errors: list[BaseException] = []
    try:
        await create(store, saga())  # trust authentication: any password is let in
        await store.commit(step("s1", 2, "book", "pay"))
        for fault in (_refused_write, _cut_write, _refused_connection):
            errors.append(await fault(store, proxy))
        reopened = store.reopen()
        shown = [store.dsn, store.url, reopened.dsn, reopened.url, repr(store)]
        await reopened.close()
    finally:
        await store.close()

    assert ["StoreRefused", "CommitOutcomeUnknown", "StoreError"] == [
        type(e).__name__ for e in errors]
    assert [] == [text for text in shown + [str(e) for e in errors] if SECRET in text]
    assert "***" in store.dsn


async def _refused_write(store: PostgresStore, proxy: TcpProxy) -> BaseException:
    with pytest.raises(StoreError) as raised:  # the server refuses a NUL in a text
        await create(store, saga("bad\x00id"))
    return raised.value


async def _cut_write(store: PostgresStore, proxy: TcpProxy) -> BaseException:
    proxy.pause(up=True, down=False)
    commit = asyncio.ensure_future(store.commit(step("s1", 3, "pay", "ship")))
    await until(lambda: _true(proxy.held() > 0))
    proxy.drop()
    proxy.resume()
    with pytest.raises(CommitOutcomeUnknown) as raised:
        await asyncio.wait_for(commit, WAIT)
    return raised.value


async def _refused_connection(store: PostgresStore, proxy: TcpProxy) -> BaseException:
    await store.close()
    proxy.refuse()
    try:
        with pytest.raises(StoreError) as raised:
            await store.load("s1")
    finally:
        proxy.refuse(False)
    return raised.value


async def _is(expected: int, found: Awaitable[Any]) -> bool:
    return expected == await found


async def _true(value: bool) -> bool:
    return value
