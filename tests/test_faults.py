"""Faults of issue 14 that no other test module covers: error texts and results no store
can keep, a stale write batched with a live one of the same saga, a worker whose clock
runs ahead, a saga statesaga cannot go on with, an event for a saga of a definition not
registered here, a worker paused past its lease.

Most failed before their fix; those of results, of creates batched together and of the
paused worker pin down behaviour that already held, as regression tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from chaos.hostile import HOSTILE_ERRORS, HOSTILE_RESULTS, Unprintable
from storekit import Backend

from statesaga import Orchestrator, SagaStateMachine, SagaStatus, StepContext
from statesaga.stores.base import Signals


def _undone(undone: list[str]) -> SagaStateMachine:
    m = SagaStateMachine("hostile")
    m.step("a", lambda ctx: None, compensation=lambda ctx: undone.append("a"))
    return m


@pytest.mark.parametrize("kind", sorted(HOSTILE_ERRORS))
async def test_a_step_raising_a_hostile_error_is_compensated_with_its_error_stored(
        durable: Backend, kind: str) -> None:
    undone: list[str] = []
    m = _undone(undone)

    def boom(ctx: StepContext) -> None:
        raise HOSTILE_ERRORS[kind]()

    m.step("b", boom)
    store = durable.store()
    record = await Orchestrator(store=store).run(m, saga_id=f"h-{kind.replace(' ', '-')}")
    assert SagaStatus.COMPENSATED is record.status
    assert ["a"] == undone
    stored = await store.load(record.saga_id)
    assert record.error == stored.error
    assert stored.error is not None
    assert len(stored.error) < 70_000


@pytest.mark.parametrize("kind", sorted(HOSTILE_RESULTS))
async def test_a_result_that_cannot_be_stored_fails_its_step_naming_the_key_and_undoes_it(
        durable: Backend, kind: str) -> None:
    undone: list[str] = []
    m = _undone(undone)
    m.step("b", lambda ctx: HOSTILE_RESULTS[kind](),
           compensation=lambda ctx: undone.append("b"))
    store = durable.store()
    record = await Orchestrator(store=store).run(m, saga_id=f"r-{kind.replace(' ', '-')}")
    assert SagaStatus.COMPENSATED is record.status
    assert ["b", "a"] == undone  # the step ran: its outcome is undone too
    assert record.error is not None
    assert "result[" in record.error or "bytes of JSON" in record.error
    assert record == await store.load(record.saga_id)


@pytest.mark.parametrize("kind", sorted(HOSTILE_ERRORS))
async def test_a_compensation_raising_a_hostile_error_leaves_the_saga_failed_saying_why(
        durable: Backend, kind: str) -> None:
    from statesaga import Retry

    def undo(ctx: StepContext) -> None:
        raise HOSTILE_ERRORS[kind]()

    def boom(ctx: StepContext) -> None:
        raise RuntimeError("b failed")

    m = SagaStateMachine("stuck")
    m.step("a", lambda ctx: None, compensation=undo, compensation_retry=Retry(attempts=2,
                                                                               backoff=0))
    m.step("b", boom)
    store = durable.store()
    record = await Orchestrator(store=store).run(m, saga_id=f"c-{kind.replace(' ', '-')}")
    assert SagaStatus.FAILED is record.status
    assert record.error is not None
    assert "retry" in record.error
    assert record == await store.load(record.saga_id)


async def test_a_hook_whose_error_cannot_be_printed_fails_its_move_not_the_worker(
        durable: Backend) -> None:
    def on_enter(ctx: StepContext) -> None:
        raise Unprintable()

    m = SagaStateMachine("hooked")
    m.add_state("start", on_enter=None)
    m.add_state("middle", on_enter=on_enter)
    m.add_transition("start", "middle", "go")
    m.add_transition("middle", "completed", "done")
    store = durable.store()
    orch = Orchestrator(store=store)
    before = await orch.start(m, saga_id="hook-1")
    with pytest.raises(Unprintable):  # the hook's own error, not one raised describing it
        await orch.send("hook-1", "go")
    assert before.state == (await store.load("hook-1")).state


async def test_a_stale_commit_batched_with_a_live_one_of_the_same_saga_is_refused(
        durable: Backend) -> None:
    from storekit import create, saga, step

    from statesaga import SagaConflict

    store = durable.store(max_size=4) if durable.kind == "postgres" else durable.store()
    for i in ("s1", "s2"):
        await create(store, saga(i))
    live, stale = step("s1", 2, "book", "pay"), step("s1", 5, "book", "refund")

    outcomes = await asyncio.gather(store.commit(step("s2", 2, "book", "pay")),
                                    store.commit(live), store.commit(stale),
                                    return_exceptions=True)

    assert [Signals(), Signals()] == outcomes[:2]
    assert isinstance(outcomes[2], SagaConflict)  # not reported as applied: a phantom
    record = await store.load("s1")
    assert (2, "pay") == (record.revision, record.state)
    assert 2 == await durable.transitions(store, "s1")


async def test_two_creates_of_one_saga_batched_together_create_it_once(durable: Backend
                                                                      ) -> None:
    from storekit import create, saga

    from statesaga import SagaConflict

    store = durable.store(max_size=4) if durable.kind == "postgres" else durable.store()

    outcomes = await asyncio.gather(create(store, saga("s0")), create(store, saga("s1")),
                                    create(store, saga("s1")), return_exceptions=True)

    assert not isinstance(outcomes[0], BaseException)
    assert 1 == sum(isinstance(o, SagaConflict) for o in outcomes[1:])
    assert 1 == await durable.transitions(store, "s1")


async def test_a_worker_whose_clock_runs_40_s_ahead_does_not_fire_a_deadline_early_on_postgres(
        postgres_dsn: str, pg_schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Timers are the database's on PostgreSQL (many machines, many clocks); SQLite serves
    one machine, whose clock every worker shares."""
    import time

    from statesaga import PostgresStore

    m = SagaStateMachine("timed", deadline=30)
    m.step("a", lambda ctx: None, compensation=lambda ctx: None)
    m.step("b", lambda ctx: None)
    first = PostgresStore(postgres_dsn, schema=pg_schema)
    await Orchestrator(store=first).start(m, saga_id="t1")  # deadline: 30 s from now
    await first.close()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 40)
    skewed = PostgresStore(postgres_dsn, schema=pg_schema)
    try:
        report = await Orchestrator(store=skewed, sagas=[m]).recover()
        assert ["t1"] == [r.saga_id for r in report.recovered]
        assert SagaStatus.COMPLETED is (await skewed.load("t1")).status
    finally:
        await skewed.close()


async def test_a_saga_whose_move_the_store_refuses_ends_failed_saying_why_and_is_not_rerun(
        durable: Backend) -> None:
    store = durable.store()
    await store.open()
    if durable.kind == "sqlite":
        await durable.sql("CREATE TRIGGER boom BEFORE INSERT ON transitions WHEN "
                          "NEW.dest = 'b' BEGIN SELECT RAISE(ABORT, 'no b here'); END")
    else:
        await durable.sql("ALTER TABLE transitions ADD CONSTRAINT boom CHECK (dest <> 'b')")
    calls: list[str] = []
    m = SagaStateMachine("refused")
    m.step("a", lambda ctx: calls.append("a"), compensation=lambda ctx: calls.append("undo a"))
    m.step("b", lambda ctx: calls.append("b"))
    orch = Orchestrator(store=store)

    record = await orch.run(m, saga_id="u1")

    assert SagaStatus.FAILED is record.status
    assert record.error is not None
    assert "the store refused to write its move out of a" in record.error
    assert "statesaga retry u1" in record.error
    assert record == await store.load("u1")
    report = await Orchestrator(store=store, sagas=[m]).recover()
    assert ((), ()) == (report.recovered, report.failed)  # never run again
    assert ["a"] == calls
    if durable.kind == "sqlite":  # fixed: a retry undoes what it did
        await durable.sql("DROP TRIGGER boom")
    else:
        await durable.sql("ALTER TABLE transitions DROP CONSTRAINT boom")
    assert SagaStatus.COMPENSATED is (await orch.retry("u1")).status
    assert ["a", "undo a"] == calls


class FailsOnce:
    """A store whose first commit of one saga raises what no store should (a bug)."""

    def __init__(self, store: Any, saga_id: str) -> None:
        self._store, self.saga_id, self.failed = store, saga_id, False

    async def commit(self, commit: Any) -> Any:
        if commit.saga_id == self.saga_id and not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the store")
        return await self._store.commit(commit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_saga_statesaga_fails_on_ends_failed_saying_why_and_is_not_run_again(
        durable: Backend) -> None:
    calls: list[str] = []
    m = SagaStateMachine("plain")
    m.step("a", lambda ctx: calls.append("a"), compensation=lambda ctx: calls.append("undo"))
    m.step("b", lambda ctx: None)
    plain = durable.store()
    for saga_id in ("ok-1", "bug", "ok-2"):
        await Orchestrator(store=plain).start(m, saga_id=saga_id)
    store = FailsOnce(plain, "bug")
    orch = Orchestrator(store=store, sagas=[m])  # type: ignore[arg-type]

    report = await orch.recover()

    assert ["ok-1", "ok-2"] == sorted(r.saga_id for r in report.recovered)
    assert [] == [f for f in report.failed if not f.startswith("bug: RuntimeError")]
    stuck = await plain.load("bug")
    assert SagaStatus.FAILED is stuck.status
    assert stuck.error is not None
    assert "running it failed (RuntimeError: a bug in the store)" in stuck.error
    assert ((), ()) == ((again := await orch.recover()).recovered, again.failed)
    assert SagaStatus.COMPENSATED is (await orch.retry("bug")).status
    assert ["a", "a", "a", "undo"] == calls


async def test_an_event_for_a_saga_whose_definition_is_not_here_is_refused_before_any_claim(
        durable: Backend) -> None:
    from statesaga import SagaNotRegistered

    theirs = SagaStateMachine("theirs")
    theirs.add_state("waiting")
    theirs.add_transition("waiting", "completed", "go")
    ours = SagaStateMachine("ours")
    ours.step("a", lambda ctx: None)
    store = durable.store()
    before = await Orchestrator(store=store).start(theirs, saga_id="t1")

    with pytest.raises(SagaNotRegistered):
        await Orchestrator(store=store, sagas=[ours]).send("t1", "go")

    after = await store.load("t1")
    assert (before.revision, before.fence, before.state) == (
        after.revision, after.fence, after.state)  # not claimed, not moved


async def test_a_worker_paused_past_its_lease_runs_its_step_once_and_finishes(
        durable: Backend) -> None:
    """The loop blocked for 2.5 leases (as SIGSTOP would): when it goes on, the saga is
    finished by the same run, its step not started a second time (see also the claim test
    below, which pins the cause down)."""
    import time

    runs: list[int] = []

    async def hold(ctx: StepContext) -> None:
        runs.append(ctx.fence)
        if len(runs) == 1:
            time.sleep(2.5)  # noqa: ASYNC251 - the whole process stops, as SIGSTOP would

    m = SagaStateMachine("paused")
    m.step("hold", hold, compensation=lambda ctx: None)
    m.step("last", lambda ctx: None)
    store = durable.store()
    orch = Orchestrator(store=store, sagas=[m], lease=1.0)
    await orch.start(m, saga_id="p1")
    stop = asyncio.Event()
    worker = asyncio.ensure_future(orch.work(concurrency=4, poll=0.05, stop=stop))
    for _ in range(200):  # the saga is written by the worker's task
        if (await store.load("p1")).is_terminal:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await worker

    assert SagaStatus.COMPLETED is (await store.load("p1")).status
    assert 1 == len(runs)


async def test_a_worker_never_claims_a_saga_it_holds_even_when_its_lease_lapsed(
        backend: Backend) -> None:
    """A paused worker (SIGSTOP) wakes with its leases lapsed: its next poll must not take
    the sagas it is still running, or it runs their steps a second time beside the first
    (a livelock: 17 runs of one step in 20 s, issue 14)."""
    from storekit import create, saga

    store = backend.store()
    await create(store, saga("s1"), owner="w1", now=0, lease=1)

    mine = await store.claim("w1", now=100, lease=1, limit=10)
    theirs = await store.claim("w2", now=100, lease=1, limit=10)

    assert [] == mine
    assert ["s1"] == [r.saga_id for r in theirs]


def test_statesaga_recover_goes_past_a_saga_its_store_refuses_says_so_and_exits_0(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    from statesaga import SQLiteStore
    from statesaga.cli import main
    from statesaga.examples.trip import trip

    async def start() -> None:
        store = SQLiteStore(tmp_path / "sagas.db")
        for saga_id in ("ok-1", "poison", "ok-2"):
            await Orchestrator(store=store).start(trip, {"flight": "LH1"}, saga_id=saga_id)
        await store.close()

    asyncio.run(start())
    conn = sqlite3.connect(tmp_path / "sagas.db")
    conn.execute("CREATE TRIGGER boom BEFORE INSERT ON transitions WHEN "
                 "NEW.saga_id = 'poison' BEGIN SELECT RAISE(ABORT, 'not this one'); END")
    conn.commit()
    conn.close()

    code = main(["--store", f"sqlite:///{tmp_path / 'sagas.db'}", "recover"])

    out = capsys.readouterr().out
    assert 0 == code
    assert "recovered 2 saga(s)" in out
    assert "could not go on: poison: StoreRefused:" in out
    assert "not this one" in out


async def test_a_queued_event_whose_guard_raises_an_unprintable_error_is_rejected_not_fatal(
        durable: Backend) -> None:
    def guard(event: Any, ctx: StepContext) -> bool:
        raise Unprintable()

    m = SagaStateMachine("guarded")
    m.add_state("waiting")
    m.add_transition("waiting", "completed", "go", guard=guard)
    m.add_transition("waiting", "compensated", "cancel")
    store = durable.store()
    orch = Orchestrator(store=store, sagas=[m])
    await orch.start(m, saga_id="g1")
    await orch.recover()  # it waits for an event now
    await store.enqueue_event("g1", "m1", "go", "{}", now=None)

    await Orchestrator(store=store, sagas=[m]).recover()  # applies the queued event

    record = await store.load("g1")
    assert ("waiting", SagaStatus.RUNNING) == (record.state, record.status)
    assert "rejected" in (record.history[-1].reason or "")
