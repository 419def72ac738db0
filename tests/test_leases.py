"""Leases and outside events between workers sharing one real store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from statesaga import (
    CommitOutcomeUnknown,
    LeaseHeld,
    Orchestrator,
    SagaStateMachine,
    SagaStatus,
    SQLiteStore,
    StepContext,
    StoreError,
)
from statesaga.stores.base import Commit, Signals


def approval(gate: asyncio.Event, calls: list[str]) -> SagaStateMachine:
    """A step that waits on `gate`, then a state that waits for `approved`."""
    async def prepare(ctx: StepContext) -> None:
        calls.append(f"prepare {ctx.fence}")
        await gate.wait()

    m = SagaStateMachine("approval")
    m.step("prepare", prepare, compensation=lambda ctx: None)
    m.add_state("awaiting")
    m.add_transition("awaiting", "completed", "approved")
    m.add_transition("awaiting", "compensated", "rejected")
    return m


async def test_an_event_for_a_saga_another_worker_runs_is_queued_and_applied_when_it_waits(
        tmp_path: Path) -> None:
    gate, calls = asyncio.Event(), []
    machine = approval(gate, calls)
    a = Orchestrator(store=SQLiteStore(tmp_path / "s.db"), owner="a")
    b = Orchestrator(store=SQLiteStore(tmp_path / "s.db"), owner="b", sagas=[machine])
    running = asyncio.ensure_future(a.run(machine, saga_id="q1"))
    while not calls:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    sending = asyncio.ensure_future(b.send("q1", "approved", message_id="m-1"))
    while not await b.store.queued_events("q1"):  # noqa: ASYNC110 (it queued it)
        await asyncio.sleep(0.01)
    gate.set()  # a's step ends; a applies the queued event once its saga waits
    record = await asyncio.wait_for(sending, 30)
    assert SagaStatus.COMPLETED is record.status
    assert SagaStatus.COMPLETED is (await running).status
    assert [] == await b.store.queued_events("q1")
    assert ["start", "succeed", "approved"] == [t.event for t in record.history]
    again = await b.send("q1", "approved", message_id="m-1")  # the same message: no change
    assert record.revision == again.revision
    await a.store.close()
    await b.store.close()


async def test_a_worker_whose_lease_was_taken_stops_at_once_and_writes_nothing(
        tmp_path: Path) -> None:
    gate, calls = asyncio.Event(), []
    machine = approval(gate, calls)
    a = Orchestrator(store=SQLiteStore(tmp_path / "s.db"), owner="a", lease=0.3)
    running = asyncio.ensure_future(a.run(machine, saga_id="l1"))
    while not calls:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    other = SQLiteStore(tmp_path / "s.db")  # a's lease lapses (a paused process, say) ...
    (taken,) = await other.claim("b", now=time.time() + 60, lease=600, limit=1, saga_id="l1")
    with pytest.raises(LeaseHeld, match="taken over by another worker"):
        await asyncio.wait_for(running, 30)  # ... a's next renewal finds it taken: a stops
    gate.set()
    await asyncio.sleep(0.2)
    after = await other.load("l1")
    assert (taken.revision, 2) == (after.revision, taken.fence)  # b's claim, b's fence
    assert ["start"] == [t.event for t in after.history]  # a wrote nothing after the claim
    await a.store.close()
    await other.close()


class LostReply:
    """A store whose commits reach the database but whose replies are lost, `times` times."""

    def __init__(self, store: Any, times: int) -> None:
        self._store, self.times = store, times

    async def commit(self, commit: Commit) -> Signals:
        signals = await self._store.commit(commit)
        if self.times:
            self.times -= 1
            raise CommitOutcomeUnknown("the connection dropped before the reply came")
        return signals

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_commit_whose_outcome_is_unknown_is_read_back_and_not_written_twice(
        tmp_path: Path) -> None:
    steps: list[str] = []
    m = SagaStateMachine("lossy")
    m.step("a", lambda ctx: steps.append("a"), compensation=lambda ctx: None)
    m.step("b", lambda ctx: steps.append("b"))
    store = LostReply(SQLiteStore(tmp_path / "s.db"), times=2)
    record = await Orchestrator(store=store).run(m, saga_id="u1")  # type: ignore[arg-type]
    assert SagaStatus.COMPLETED is record.status
    assert ["a", "b"] == steps  # neither step ran again
    assert record == await store.load("u1")
    await store.close()


class Refuses:
    """A store that refuses every commit of one saga (a value its database will not take)."""

    def __init__(self, store: Any, saga_id: str) -> None:
        self._store, self.saga_id = store, saga_id

    async def commit(self, commit: Commit) -> Signals:
        if commit.saga_id == self.saga_id:
            raise StoreError(f"the database refused saga {self.saga_id!r}")
        result: Signals = await self._store.commit(commit)
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_recover_goes_past_a_saga_that_cannot_be_written_and_reports_it(
        tmp_path: Path) -> None:
    m = SagaStateMachine("plain")
    m.step("a", lambda ctx: None)
    first = Orchestrator(store=SQLiteStore(tmp_path / "s.db"))
    for saga_id in ("ok-1", "poison", "ok-2"):
        await first.start(m, saga_id=saga_id)
    store = Refuses(SQLiteStore(tmp_path / "s.db"), "poison")
    report = await Orchestrator(store=store, sagas=[m]).recover()  # type: ignore[arg-type]
    assert ["ok-1", "ok-2"] == sorted(r.saga_id for r in report.recovered)
    assert 1 == len(report.failed)
    assert report.failed[0].startswith("poison: StoreError: the database refused")
    await first.store.close()
    await store.close()
