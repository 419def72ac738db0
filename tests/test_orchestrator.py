"""Orchestrator: running sagas, failures, retries, timeouts, deadlines, abort, idempotency."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

from statesaga import (
    InMemoryStore,
    InvalidSagaData,
    Orchestrator,
    Retry,
    SagaConflict,
    SagaError,
    SagaNotFound,
    SagaStateMachine,
    SagaStatus,
    StepContext,
)
from statesaga.testing import FakeClock
from statesaga.testing.strategies import failure_schedules, linear_sagas


class Recorder:
    """Steps that record their calls and fail on a script."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: dict[str, int | None] = {}  # step -> failures left (None: always)
        self.hang: set[str] = set()
        self.errors: dict[str, type[Exception]] = {}

    def _gate(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            left = self.fail[name]
            if left is None or left > 0:
                if left is not None:
                    self.fail[name] = left - 1
                raise self.errors.get(name, RuntimeError)(f"{name} broke")

    def action(self, name: str) -> Any:
        async def act(ctx: StepContext) -> dict[str, Any]:
            self._gate(name)
            if name in self.hang:
                await asyncio.Event().wait()
            return {"done": name, "key": ctx.idempotency_key}
        act.__name__ = name
        return act

    def undo(self, name: str) -> Any:
        def comp(ctx: StepContext) -> None:  # a plain function: sync compensations work
            self._gate(f"undo {name}")
        return comp


def linear(rec: Recorder, names: str = "abcd", *, without: str = "", **opts: Any
           ) -> SagaStateMachine:
    m = SagaStateMachine("linear", deadline=opts.pop("deadline", None))
    for n in names:
        m.step(n, rec.action(n), compensation=None if n in without else rec.undo(n), **opts)
    return m


def orch(**kw: Any) -> Orchestrator:
    return Orchestrator(clock=kw.pop("clock", FakeClock()), **kw)


async def test_happy_path_runs_every_step_in_order_and_completes() -> None:
    rec = Recorder()
    record = await orch().run(linear(rec), {"order": 7}, saga_id="happy")
    assert SagaStatus.COMPLETED is record.status
    assert "completed" == record.state
    assert ["a", "b", "c", "d"] == rec.calls
    assert {"done": "b", "key": "happy:b"} == record.results["b"]
    assert {"order": 7} == dict(record.data)
    assert record.error is None


@pytest.mark.parametrize(("failing", "undone"), [
    ("a", []), ("b", ["undo a"]), ("c", ["undo b", "undo a"]),
    ("d", ["undo c", "undo b", "undo a"])])
async def test_failure_at_each_step_compensates_the_completed_ones_newest_first(
        failing: str, undone: list[str]) -> None:
    rec = Recorder()
    rec.fail[failing] = None
    record = await orch().run(linear(rec))
    assert SagaStatus.COMPENSATED is record.status
    forward = list("abcd"[: "abcd".index(failing) + 1])
    assert forward + undone == rec.calls
    assert f"undo {failing}" not in rec.calls
    assert f"step {failing!r} failed on attempt 1: RuntimeError: {failing} broke" == record.error


async def test_failure_at_step_3_compensates_2_then_1() -> None:
    rec = Recorder()
    rec.fail["c"] = None
    record = await orch().run(linear(rec))
    assert ["compensating_b", "compensating_a", "compensated"] == [
        t.dest for t in record.history[-3:]]


async def test_a_step_without_compensation_is_skipped_on_the_way_back() -> None:
    rec = Recorder()
    rec.fail["d"] = None
    record = await orch().run(linear(rec, without="b"))
    assert ["a", "b", "c", "d", "undo c", "undo a"] == rec.calls
    assert SagaStatus.COMPENSATED is record.status


async def test_retries_then_success_records_each_attempt() -> None:
    rec = Recorder()
    rec.fail["b"] = 2
    record = await orch().run(linear(rec, retry=Retry(attempts=3, backoff=1)))
    assert SagaStatus.COMPLETED is record.status
    assert ["a", "b", "b", "b", "c", "d"] == rec.calls
    tries = [(t.event, t.attempt) for t in record.history if t.step == "b"]
    assert [("retry", 1), ("retry", 2), ("succeed", 3)] == tries


async def test_retries_exhausted_compensate() -> None:
    rec = Recorder()
    rec.fail["b"] = None
    record = await orch().run(linear(rec, retry=Retry(attempts=3)))
    assert ["a", "b", "b", "b", "undo a"] == rec.calls
    assert "step 'b' failed on attempt 3" in (record.error or "")


async def test_a_non_retryable_error_stops_at_once() -> None:
    rec = Recorder()
    rec.fail["b"] = None
    rec.errors["b"] = KeyError
    m = linear(rec, retry=Retry(attempts=5, non_retryable=(KeyError,)))
    record = await orch().run(m)
    assert ["a", "b", "undo a"] == rec.calls
    assert SagaStatus.COMPENSATED is record.status


async def test_backoff_waits_between_attempts_in_virtual_time() -> None:
    rec = Recorder()
    rec.fail["a"] = 2
    clock = FakeClock()
    start = clock.time()
    await orch(clock=clock).run(linear(rec, "a", retry=Retry(attempts=3, backoff=10, max_backoff=60,
                                                             jitter=0)))
    assert 30 == clock.time() - start  # 10 s, then 20 s


async def test_a_timeout_compensates_the_timed_out_step_too() -> None:
    rec = Recorder()
    rec.hang.add("c")
    record = await orch().run(linear(rec, timeout=5.0))
    assert ["a", "b", "c", "undo c", "undo b", "undo a"] == rec.calls
    assert "timeout" == record.history[3].event
    assert "TimeoutError" in (record.error or "")


async def test_a_timed_out_attempt_is_retried_with_the_same_idempotency_key() -> None:
    rec = Recorder()
    keys: list[str] = []
    hang_once = [True]

    async def flaky(ctx: StepContext) -> str:
        keys.append(ctx.idempotency_key)
        if hang_once.pop() if hang_once else False:
            await asyncio.Event().wait()
        return "ok"

    m = SagaStateMachine("flaky")
    m.step("pay", flaky, compensation=rec.undo("pay"), timeout=1, retry=Retry(attempts=2))
    record = await orch().run(m, saga_id="k1")
    assert ["k1:pay", "k1:pay"] == keys
    assert SagaStatus.COMPLETED is record.status
    assert ["retry_unknown", "succeed"] == [t.event for t in record.history[1:]]


async def test_an_unknown_outcome_followed_by_failures_compensates_that_step() -> None:
    rec = Recorder()
    calls = iter(["hang", "raise"])

    async def step(ctx: StepContext) -> None:
        if next(calls) == "hang":
            await asyncio.Event().wait()
        raise RuntimeError("declined")

    m = SagaStateMachine("doubt")
    m.step("a", rec.action("a"), compensation=rec.undo("a"))
    m.step("pay", step, compensation=rec.undo("pay"), timeout=1, retry=Retry(attempts=2))
    record = await orch().run(m)
    assert ["a", "undo pay", "undo a"] == rec.calls
    assert "timeout" == record.history[-3].event


async def test_the_deadline_compensates_the_saga_instead_of_killing_it() -> None:
    rec = Recorder()
    rec.hang.add("b")
    clock = FakeClock()
    start = clock.time()
    record = await orch(clock=clock).run(linear(rec, deadline=300))
    assert SagaStatus.COMPENSATED is record.status
    assert ["a", "b", "undo b", "undo a"] == rec.calls
    assert "deadline of 300s passed during step 'b'" in (record.error or "")
    assert 300 == clock.time() - start


async def test_the_deadline_bounds_retry_backoff() -> None:
    rec = Recorder()
    rec.fail["a"] = None
    clock = FakeClock()
    m = linear(rec, "ab", deadline=25,
               retry=Retry(attempts=10, backoff=10, max_backoff=60, jitter=0))
    record = await orch(clock=clock).run(m)
    assert SagaStatus.COMPENSATED is record.status
    assert "deadline" in (record.error or "")
    assert ["a", "a", "undo a"] == rec.calls  # at 0 s and 10 s; the wait to 30 s is cut at 25


async def test_a_compensation_that_fails_once_is_retried() -> None:
    rec = Recorder()
    rec.fail["c"] = None
    rec.fail["undo b"] = 1
    record = await orch().run(linear(rec))
    assert SagaStatus.COMPENSATED is record.status
    assert ["a", "b", "c", "undo b", "undo b", "undo a"] == rec.calls


async def test_a_compensation_that_always_fails_leaves_the_saga_stuck_with_advice() -> None:
    rec = Recorder()
    rec.fail["c"] = None
    rec.fail["undo b"] = None
    record = await orch().run(linear(rec), saga_id="trip-42")
    assert SagaStatus.FAILED is record.status
    assert record.is_stuck
    assert 5 == rec.calls.count("undo b")
    assert "undo a" not in rec.calls
    assert (record.error or "").startswith(
        "saga 'trip-42' is stuck in compensating_b after 5 attempts: RuntimeError: undo b broke")
    assert "`statesaga retry trip-42`" in (record.error or "")


async def test_retry_of_a_stuck_saga_finishes_its_compensation() -> None:
    rec = Recorder()
    rec.fail["c"] = None
    rec.fail["undo b"] = None
    o = orch()
    await o.run(linear(rec), saga_id="stuck")
    del rec.fail["undo b"]  # the cause is fixed
    record = await o.retry("stuck", reason="hotel API back")
    assert SagaStatus.COMPENSATED is record.status
    assert ["undo b", "undo a"] == rec.calls[-2:]
    resumed = [t for t in record.history if t.source == "failed"]
    assert [("retry", "compensating_b", "hotel API back")] == [
        (t.event, t.dest, t.reason) for t in resumed]
    assert "step 'c' failed" in (record.error or "")


async def test_retry_of_a_saga_that_is_not_stuck_is_refused() -> None:
    o = orch()
    await o.run(linear(Recorder()), saga_id="fine")
    with pytest.raises(SagaError, match="not stuck"):
        await o.retry("fine")


async def test_abort_of_a_running_saga_cancels_its_step_and_compensates_it() -> None:
    rec = Recorder()
    rec.hang.add("c")
    o = Orchestrator()
    task = asyncio.create_task(o.run(linear(rec), saga_id="abort-me"))
    while rec.calls[-1:] != ["c"]:  # noqa: ASYNC110 - wait for the step to start
        await asyncio.sleep(0)
    record = await o.abort("abort-me", reason="customer cancelled")
    assert record == await task
    assert SagaStatus.COMPENSATED is record.status
    assert ["a", "b", "c", "undo c", "undo b", "undo a"] == rec.calls
    assert ("abort", "customer cancelled") == (record.history[3].event, record.history[3].reason)
    assert "customer cancelled" in (record.error or "")


async def test_abort_of_a_pending_saga_compensates_what_may_have_started() -> None:
    rec = Recorder()
    o = orch()
    await o.start(linear(rec), saga_id="later")
    record = await o.abort("later")
    assert SagaStatus.COMPENSATED is record.status
    assert ["undo a"] == rec.calls  # compensations tolerate "nothing to undo"


async def test_abort_of_a_finished_saga_is_refused() -> None:
    o = orch()
    await o.run(linear(Recorder()), saga_id="done")
    with pytest.raises(SagaError, match="already completed"):
        await o.abort("done")


async def test_abort_of_a_saga_held_by_another_worker_is_requested_from_it() -> None:
    store = InMemoryStore()
    rec = Recorder()
    m = linear(rec)
    first = Orchestrator(store=store, clock=FakeClock())
    await first.start(m, saga_id="elsewhere")
    await store.claim("worker-2", now=first.clock.time(), lease=60, limit=1)
    second = Orchestrator(store=store, sagas=[m])
    record = await second.abort("elsewhere", reason="stop")
    assert "a" == record.state  # untouched here: the worker holding it aborts at its next step
    assert [] == rec.calls


async def test_rerunning_a_finished_saga_id_returns_its_record_and_calls_nothing() -> None:
    rec = Recorder()
    o = orch()
    m = linear(rec)
    first = await o.run(m, {"x": 1}, saga_id="once")
    second = await o.run(m, {"x": 1}, saga_id="once")
    assert first == second
    assert ["a", "b", "c", "d"] == rec.calls


async def test_the_same_saga_id_run_twice_at_once_runs_once() -> None:
    rec = Recorder()
    o = orch()
    m = linear(rec)
    one, two = await asyncio.gather(o.run(m, saga_id="twin"), o.run(m, saga_id="twin"))
    assert one == two
    assert ["a", "b", "c", "d"] == rec.calls


async def test_a_saga_id_reused_with_other_data_is_a_conflict() -> None:
    o = orch()
    m = linear(Recorder())
    await o.run(m, {"x": 1}, saga_id="key")
    with pytest.raises(SagaConflict, match="use a new id"):
        await o.run(m, {"x": 2}, saga_id="key")


async def test_sync_and_async_actions_and_compensations_all_work() -> None:
    calls: list[str] = []
    m = SagaStateMachine("mixed")
    m.step("sync", lambda ctx: calls.append("sync") or 1,
           compensation=lambda ctx: calls.append(f"undo sync {ctx.result}"))

    async def boom(ctx: StepContext) -> None:
        calls.append("async")
        raise ValueError("no")

    async def undo(ctx: StepContext) -> None:
        calls.append("undo async")

    m.step("async_step", boom, compensation=undo)
    await orch().run(m)
    assert ["sync", "async", "undo sync 1"] == calls


async def test_a_sync_compensation_of_a_timed_step_runs_inline() -> None:
    calls: list[str] = []

    async def fails(ctx: StepContext) -> None:
        raise RuntimeError("no")

    m = SagaStateMachine("inline")
    m.step("a", lambda ctx: None, compensation=lambda ctx: calls.append("undo a"))
    m.step("b", fails, timeout=5)
    record = await orch().run(m)
    assert (SagaStatus.COMPENSATED, ["undo a"]) == (record.status, calls)


async def test_the_compensation_sees_the_action_result_and_the_same_key() -> None:
    seen: list[tuple[Any, str]] = []
    m = SagaStateMachine("ctx")
    m.step("a", lambda ctx: {"booking": 7},
           compensation=lambda ctx: seen.append((ctx.result, ctx.idempotency_key)))
    m.step("b", lambda ctx: 1 / 0)
    await orch().run(m, saga_id="s")
    assert [({"booking": 7}, "s:a")] == seen


async def test_steps_see_earlier_results_and_read_only_data() -> None:
    seen: list[Any] = []

    def b(ctx: StepContext) -> None:
        seen.append(ctx.results["a"])
        ctx.data["x"] = 2  # type: ignore[index]

    m = SagaStateMachine("share")
    m.step("a", lambda ctx: ctx.data["x"] + 1)
    m.step("b", b)
    record = await orch().run(m, {"x": 1})
    assert [2] == seen
    assert SagaStatus.COMPENSATED is record.status
    assert "TypeError" in (record.error or "")


async def test_non_json_data_is_refused_before_anything_is_stored() -> None:
    store = InMemoryStore()
    with pytest.raises(InvalidSagaData, match=r"data\['when'\] is of type object"):
        await Orchestrator(store=store).run(linear(Recorder()), {"when": object()})
    assert [] == await store.list()


async def test_data_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(SagaError, match="must be a JSON object"):
        await orch().run(linear(Recorder()), [1, 2])  # type: ignore[arg-type]


async def test_a_step_result_that_is_not_json_names_the_step_and_compensates_it() -> None:
    rec = Recorder()
    m = SagaStateMachine("badresult")
    m.step("a", rec.action("a"), compensation=rec.undo("a"))
    m.step("b", lambda ctx: {1, 2}, compensation=rec.undo("b"))
    record = await orch().run(m)
    assert SagaStatus.COMPENSATED is record.status
    assert "the result of step 'b' cannot be stored: result is of type set" in (record.error or "")
    assert "invalid_result" == record.history[2].event
    assert ["a", "undo b", "undo a"] == rec.calls
    assert "b" not in record.results


async def test_an_unknown_saga_id_is_not_found() -> None:
    with pytest.raises(SagaNotFound, match="no saga 'ghost'"):
        await orch().get("ghost")


async def test_get_and_list_return_records() -> None:
    o = orch()
    rec = Recorder()
    rec.fail["a"] = None
    await o.run(linear(Recorder()), saga_id="ok")
    await o.run(linear(rec), saga_id="bad")
    assert "ok" == (await o.get("ok")).saga_id
    assert ["bad", "ok"] == [r.saga_id for r in await o.list()]
    assert ["bad"] == [r.saga_id for r in await o.list(status=SagaStatus.COMPENSATED)]
    assert [] == await o.list(name="other")


async def test_every_transition_is_logged_with_its_fields_and_never_the_data() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    rec = Recorder()
    rec.fail["b"] = None
    with structlog.testing.capture_logs() as logs:
        await orch().run(linear(rec, "ab"), {"card": "4111-1111"}, saga_id="log")
    transitions = [e for e in logs if e["event"] == "saga.transition"]
    assert [("a", "b", "succeed"), ("b", "compensating_a", "fail"),
            ("compensating_a", "compensated", "succeed")] == [
        (e["source"], e["dest"], e["trigger"]) for e in transitions]
    for e in transitions:
        assert {"saga_id", "saga", "source", "dest", "trigger", "step", "attempt",
                "duration_ms"} <= set(e)
        assert "log" == e["saga_id"]
    assert not any("4111" in repr(e) for e in logs)
    failure = next(e for e in logs if e["event"] == "saga.attempt_failed")
    assert isinstance(failure["exc_info"], RuntimeError)


async def test_a_guard_that_refuses_every_exit_compensates_the_step() -> None:
    rec = Recorder()
    m = SagaStateMachine("guarded")
    m.step("a", rec.action("a"), compensation=rec.undo("a"))
    m.step("b", rec.action("b"))
    m.add_transition("a", "b", "succeed", guard=lambda ev, ctx: False)
    record = await orch().run(m)
    assert SagaStatus.COMPENSATED is record.status
    assert ["a", "undo a"] == rec.calls
    assert "no transition out of it accepted the result" in (record.error or "")


async def test_guards_on_succeed_choose_the_branch_and_the_mirror_follows_it() -> None:
    rec = Recorder()
    m = SagaStateMachine("branches")
    m.step("check", lambda ctx: ctx.data["route"], compensation=rec.undo("check"))
    m.step("left", rec.action("left"), compensation=rec.undo("left"))
    m.step("right", rec.action("right"), compensation=rec.undo("right"))
    m.step("fail_here", rec.action("fail_here"))
    m.add_transition("check", "left", "succeed",
                     guard=lambda ev, ctx: ctx.results["check"] == "left")
    m.add_transition("check", "right", "succeed")
    m.add_transition("left", "fail_here", "succeed")
    rec.fail["fail_here"] = None
    record = await orch().run(m, {"route": "right"})
    assert ["right", "fail_here", "undo right", "undo check"] == rec.calls
    assert "compensated" == record.state


async def test_an_explicit_state_waits_for_an_event_and_is_released() -> None:
    m = SagaStateMachine("waits")
    m.add_state("waiting", compensation=lambda ctx: None)
    m.add_transition("waiting", "completed", "approved")
    store = InMemoryStore()
    record = await Orchestrator(store=store).run(m, saga_id="w")
    assert (SagaStatus.RUNNING, "waiting") == (record.status, record.state)
    assert [] == await store.claim("x", now=0, lease=1, limit=10)  # waiting: not claimable


# -- properties ------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_random_linear_sagas_compensate_exactly_the_completed_steps_newest_first(
        data: st.DataObject) -> None:
    saga = data.draw(linear_sagas())
    failing = data.draw(st.sampled_from(saga.steps))
    saga.schedule = {failing: None}
    record = asyncio.run(orch().run(saga.machine))
    done = saga.steps[: saga.steps.index(failing)]
    expected = [f"undo {s}" for s in reversed(done) if s in saga.compensable]
    assert [*done, failing, *expected] == saga.calls
    assert SagaStatus.COMPENSATED is record.status


@settings(max_examples=120, deadline=None)
@given(st.data())
def test_random_failure_schedules_end_terminal_with_compensations_newest_first(
        data: st.DataObject) -> None:
    saga = data.draw(linear_sagas(retries=True))
    saga.schedule = data.draw(failure_schedules(saga))
    record = asyncio.run(orch().run(saga.machine))
    assert record.status.is_terminal
    completed = [t.source for t in record.history
                 if t.event == "succeed" and t.source in saga.steps]
    expected = [s for s in reversed(completed) if s in saga.compensable]
    undone = list(dict.fromkeys(c[5:] for c in saga.calls if c.startswith("undo ")))
    if record.status is SagaStatus.COMPLETED:
        assert ([], saga.steps) == (undone, completed)
    elif record.status is SagaStatus.COMPENSATED:
        assert expected == undone
    else:
        stuck = record.history[-1].step
        assert expected[: expected.index(stuck) + 1] == undone
