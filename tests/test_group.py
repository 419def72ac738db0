"""Group commit: commits ready together share one transaction, each keeping its own outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from storekit import create, saga, step

from statesaga import (
    Orchestrator,
    PostgresStore,
    SagaConflict,
    SagaStateMachine,
    SQLiteStore,
)
from statesaga.stores._group import GroupCommit, Outcome
from statesaga.stores.base import Signals


@pytest.fixture(params=["sqlite", "postgres"])
def durable(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        return SQLiteStore(tmp_path / "group.db")
    return PostgresStore(request.getfixturevalue("postgres_dsn"),
                         schema=request.getfixturevalue("pg_schema"), max_size=16)


@pytest.fixture
async def store(durable: Any) -> AsyncIterator[Any]:
    yield durable
    await durable.close()


def three_steps() -> SagaStateMachine:
    m = SagaStateMachine("grouped")
    for name in ("a", "b", "c"):
        m.step(name, lambda ctx: None, compensation=lambda ctx: None)
    return m


async def test_commits_of_sagas_running_together_share_transactions(store: Any) -> None:
    orch = Orchestrator(store=store)
    records = await asyncio.gather(*(orch.run(three_steps(), saga_id=f"g{i}")
                                     for i in range(16)))

    assert 16 * ["completed"] == [r.state for r in records]
    assert 16 * 3 > store.batches  # 48 step commits, far fewer transactions
    for r in records:
        assert r == await store.load(r.saga_id)


async def test_a_conflict_in_a_group_fails_only_its_own_saga(store: Any) -> None:
    await create(store, saga("s1"))
    await create(store, saga("s2"))
    stale = step("s1", 5, "book", "pay")  # s1 is at revision 1: this one conflicts
    fine = step("s2", 2, "book", "pay", result={"ok": True})

    outcome = await asyncio.gather(store.commit(stale), store.commit(fine),
                                   return_exceptions=True)

    assert isinstance(outcome[0], SagaConflict)
    assert Signals() == outcome[1]
    assert (1, 2) == ((await store.load("s1")).revision, (await store.load("s2")).revision)
    assert {"book": {"ok": True}} == (await store.load("s2")).results


async def test_two_writers_of_one_saga_in_one_group_one_wins_the_other_conflicts(
        store: Any) -> None:
    await create(store, saga("s1"))
    ours, theirs = step("s1", 2, "book", "pay"), step("s1", 2, "book", "cancel")

    outcome = await asyncio.gather(store.commit(ours), store.commit(theirs),
                                   return_exceptions=True)

    assert [Signals()] == [o for o in outcome if not isinstance(o, SagaConflict)]
    assert 1 == sum(isinstance(o, SagaConflict) for o in outcome)
    loaded = await store.load("s1")
    assert (2, 2) == (loaded.revision, len(loaded.history))


async def test_sagas_created_together_are_all_created_and_a_taken_id_conflicts(
        store: Any) -> None:
    await create(store, saga("taken"))
    ids = [f"new{i}" for i in range(8)] + ["taken", "twice", "twice"]

    outcome = await asyncio.gather(*(create(store, saga(i)) for i in ids),
                                   return_exceptions=True)

    conflicts = [i for i, o in zip(ids, outcome, strict=True) if isinstance(o, SagaConflict)]
    assert ["taken", "twice"] == conflicts
    for i in ids:
        assert 1 == len((await store.load(i)).history)


async def test_values_written_in_a_group_read_back_exactly(store: Any) -> None:
    odd = "quote ' \" back \\ slash, ünïcode ✓, \u2028 line, $1 ?1 {s}"
    at = datetime(2026, 11, 27, 12, 30, 45, 123456, tzinfo=timezone(timedelta(hours=-5)))
    records = [saga(f"{odd}{i}", at=at + timedelta(microseconds=i), data={"note": odd},
                    deadline_at=at + timedelta(days=1, microseconds=i)) for i in range(8)]
    await asyncio.gather(*(create(store, r, now=1e9, lease=i / 3, wake_at=0.1 * i)
                           for i, r in enumerate(records)))
    steps = [step(r.saga_id, 2, "book", "pay", result={"odd": odd, "n": i / 7})
             for i, r in enumerate(records)]

    await asyncio.gather(*(store.commit(c) for c in steps))

    assert 8 > store.batches
    for i, (r, c) in enumerate(zip(records, steps, strict=True)):
        loaded = await store.load(r.saga_id)
        assert (r.data, r.created_at, r.deadline_at) == (
            loaded.data, loaded.created_at, loaded.deadline_at)
        assert [r.history[0], c.transition] == list(loaded.history)
        assert {"book": {"odd": odd, "n": i / 7}} == loaded.results


# -- the mechanism itself, on a fake flush ------------------------------------------------

class Flushes:
    """A flush that records its batches and waits for `go` before writing."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.go = asyncio.Event()
        self.go.set()

    async def __call__(self, items: list[str]) -> list[Outcome]:
        await self.go.wait()
        self.batches.append(items)
        return [(not i.startswith("bad"), i.upper() if not i.startswith("bad")
                 else SagaConflict(i)) for i in items]


async def test_commits_that_arrive_during_a_write_go_together_in_the_next_batch() -> None:
    flush = Flushes()
    group: GroupCommit[str] = GroupCommit(flush)
    flush.go.clear()
    first = asyncio.ensure_future(group("a", "s1"))
    await asyncio.sleep(0)  # "a" is being written
    rest = [asyncio.ensure_future(group(i, f"s-{i}")) for i in ("b", "bad-c", "d")]
    await asyncio.sleep(0)
    flush.go.set()

    results = await asyncio.gather(first, *rest, return_exceptions=True)

    assert [["a"], ["b", "bad-c", "d"]] == flush.batches
    assert ["A", "B", "D"] == [r for r in results if isinstance(r, str)]
    assert isinstance(results[2], SagaConflict)


async def test_a_commit_cancelled_before_its_batch_is_never_written() -> None:
    flush = Flushes()
    group: GroupCommit[str] = GroupCommit(flush)
    flush.go.clear()
    first = asyncio.ensure_future(group("a", "s1"))
    await asyncio.sleep(0)
    cancelled = asyncio.ensure_future(group("b", "s2"))
    kept = asyncio.ensure_future(group("c", "s3"))
    await asyncio.sleep(0)
    cancelled.cancel()
    flush.go.set()

    assert ("A", "C") == (await first, await kept)
    assert cancelled.cancelled()
    assert [["a"], ["c"]] == flush.batches


async def test_a_lone_commit_cancelled_while_written_is_cancelled_and_the_next_goes_through(
) -> None:
    flush = Flushes()
    group: GroupCommit[str] = GroupCommit(flush)
    flush.go.clear()
    lone = asyncio.ensure_future(group("a", "s1"))
    await asyncio.sleep(0)  # its flush waits for `go`
    lone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lone
    flush.go.set()

    assert "B" == await group("b", "s2")
    assert [["b"]] == flush.batches


async def test_the_batch_of_a_cancelled_writer_is_still_written_for_the_others() -> None:
    flush = Flushes()
    group: GroupCommit[str] = GroupCommit(flush)
    await asyncio.gather(group("x", "s0"), group("y", "s9"))  # sagas commit together now
    flush.go.clear()
    writer = asyncio.ensure_future(group("a", "s1"))
    other = asyncio.ensure_future(group("b", "s2"))
    for _ in range(3):  # both are in the batch being written
        await asyncio.sleep(0)
    writer.cancel()
    flush.go.set()

    assert "B" == await other
    assert ["a", "b"] == flush.batches[-1]
    assert writer.cancelled()


async def test_a_killed_postgres_batch_connection_is_replaced_and_nothing_is_lost(
        postgres_dsn: str, pg_schema: str) -> None:
    import asyncpg

    store = PostgresStore(postgres_dsn, schema=pg_schema)
    try:
        for i in range(2):
            await create(store, saga(f"s{i}"))
        await asyncio.gather(*(store.commit(step(f"s{i}", 2, "book", "pay")) for i in range(2)))
        (killed,) = store._lanes
        conn = await asyncpg.connect(postgres_dsn)
        await conn.execute("SELECT pg_terminate_backend($1)", killed.get_server_pid())
        await conn.close()

        tries = []
        for _ in range(2):  # the first batch may still find the dead connection
            after = await asyncio.gather(*(store.commit(step(f"s{i}", 3, "pay", "ship"))
                                           for i in range(2)), return_exceptions=True)
            tries.append([type(o).__name__ for o in after])
            if after == [Signals(), Signals()]:
                break
        revisions = [(await store.load(f"s{i}")).revision for i in range(2)]
        replaced = killed not in store._lanes
    finally:
        await store.close()

    # a batch that found the connection dead cannot know whether the server got it
    assert tries in ([["Signals"] * 2], [["CommitOutcomeUnknown"] * 2, ["Signals"] * 2])
    assert [3, 3] == revisions
    assert replaced
