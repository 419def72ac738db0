"""Runs sagas: the I/O around the kernel's decisions.

Calling the user's code (with retries, timeouts, a thread for plain functions), asking
guards, running hooks, and committing each decided move before the next action runs.
Which move is made is never decided here: `kernel.decide` does that.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from . import branches, hooks, kernel, telemetry, writer
from .clock import Clock
from .codec import from_json, storable_text, to_json
from .exceptions import InvalidSagaData, OutcomeUnknown, SagaError, StoreRefused, describe
from .graph import Edge
from .hooks import HookFailed
from .records import FAILED, TERMINALS, Kind, Trigger
from .retry import Retry
from .saga_run import SagaRun
from .steps import StepSpec
from .stores.base import SagaStore


class _Outcome:
    """What one attempt came to."""

    __slots__ = ("duration", "error", "exc", "result", "unknown")

    def __init__(self, duration: float, result: Any = None, exc: BaseException | None = None,
                 error: str | None = None, unknown: bool = False) -> None:
        self.duration = duration
        self.result = result
        self.exc = exc
        self.error = error
        self.unknown = unknown


class Runner:
    """Drives sagas for one orchestrator: the same store, clock and lease for all of them."""

    def __init__(self, store: SagaStore, clock: Clock, owner: str, lease: float) -> None:
        self.store = store
        self.clock = clock
        self.owner = owner
        self.lease = lease
        self.stopping = False  # a worker shuts down: stop at the next transition

    async def drive(self, run: SagaRun, *, resumed: bool = False) -> None:
        """Run the saga until it is terminal or waits for an outside event."""
        graph = run.graph
        if (resumed and not run.pending and run.state not in TERMINALS
                and not kernel.waits(graph, run.pos)):
            await self._in_doubt(run)
        run.pending = False
        while run.state not in TERMINALS and not self.stopping:
            d = graph.defs.get(run.state)
            if run.abort is not None and d is not None:
                await self.fire(run, Trigger.ABORT, error=f"aborted: {run.abort}",
                                reason=run.abort)
            elif d is None and kernel.waits(graph, run.pos):  # its command went out
                due = kernel.due(graph, run.state, run.entered_at, None)
                if due is None or due > self.clock.time():
                    return
                spec = _spec(run)
                await self.fire(run, Trigger.TIMEOUT, step=spec.name, error=stuck(
                    run, f": no reply confirmed its compensating command within {spec.timeout}s "
                         "(it may have been dead-lettered: see the bus's dead letters)"))
            elif d is None and graph.undoes[run.state] in graph.lanes:
                await branches.run_lanes(run, lambda lane: self._compensate(
                    run, graph.defs[lane].step, lane=lane), abortable=False)
            elif d is None:
                await self._compensate(run, _spec(run))
            elif d.parallel:
                await branches.run_lanes(run, lambda lane: self._forward(
                    run, graph.defs[lane].step, lane=lane), abortable=True)
            elif d.step.action is not None:
                await self._forward(run, d.step)
            else:  # an explicit state: it waits for an outside event, or its timer
                due = kernel.due(graph, run.state, run.entered_at, run.deadline_at)
                if due is None or due > self.clock.time():
                    return
                await self.fire(run, Trigger.TIMEOUT, step=run.state, error=(
                    f"no event came in {run.state} within its timeout of {d.step.timeout}s"
                    if run.deadline_at is None or due < run.deadline_at else
                    f"the saga's deadline of {run.definition.deadline}s passed in {run.state}"))

    async def _in_doubt(self, run: SagaRun) -> None:
        """A saga taken over from a process that stopped: whatever ran in its state (each
        branch's, in a group) has an unknown outcome; record it before running it again."""
        graph = run.graph
        lanes = [x for x in run.pos.lanes if x.status in (kernel.LANE_RUNNING,
                                                          kernel.LANE_UNDOING)]
        todo: list[tuple[str, int, str | None]] = [(x.name, x.attempt + 1, x.name)
                                                   for x in lanes]
        for name, attempt, lane in todo or [(_spec(run).name, run.pos.attempt + 1, None)]:
            spec = graph.defs[name].step
            if (spec.action if run.state in graph.defs else spec.compensation) is None:
                continue
            await self.fire(run, Trigger.RETRY_UNKNOWN, step=name, attempt=attempt, lane=lane,
                            error=f"outcome unknown: the process running attempt {attempt} "
                                  "stopped before it was recorded")

    async def _forward(self, run: SagaRun, spec: StepSpec, *, lane: str | None = None
                       ) -> None:
        """Try a step's action as its policy says, then commit what came of it (a branch of
        a group: as long as its group still waits for it)."""
        mine: list[Any] = []  # what the action publishes, for the commit of its success
        home = run.state  # a branch moves only while its group is here
        doubt = run.pos.in_doubt
        attempt = run.pos.attempt + 1
        if lane is not None:
            (me,) = (x for x in run.pos.lanes if x.name == lane)
            attempt, doubt = me.attempt + 1, me.in_doubt
        limit = spec.retry.attempts if spec.retry.attempts > attempt else attempt
        while run.abort is None:
            timeout, deadline_bound = spec.timeout, False
            if run.deadline_at is not None:
                left = run.deadline_at - self.clock.time()
                if left <= 0:
                    await self._deadline(run, spec.name, attempt, None, lane, home)
                    return
                if timeout is None or left < timeout:
                    timeout, deadline_bound = left, True
            mine.clear()  # what this attempt publishes leaves only if it succeeds
            ctx = run.context(spec.name, attempt=attempt, outbox=mine)
            assert spec.action is not None
            with telemetry.attempt_span(False, run.definition.name, run.saga_id, spec.name,
                                        attempt) as span:
                out = await self._attempt_once(run, spec.action, ctx, timeout, spec.is_async,
                                               abortable=lane is None)
                span.outcome(telemetry.outcome_of(out.exc, out.unknown))
            if out.exc is None:
                await self._succeeded(run, spec, attempt, out, lane, mine, home)
                return
            mine.clear()
            if run.abort is not None:
                return  # the attempt was aborted: `drive` fires the abort
            assert out.exc is not None
            if isinstance(out.exc, TimeoutError):
                out.unknown = True
                if deadline_bound:
                    await self._deadline(run, spec.name, attempt, out.duration, lane, home)
                    return
            error = out.error or describe(out.exc)
            run.log.info("saga.attempt_failed", step=spec.name, attempt=attempt,
                         exc_info=out.exc)
            if attempt >= limit or not _retryable(spec.retry, out.exc):
                unknown = out.unknown or doubt
                await self.fire(run, Trigger.TIMEOUT if unknown else Trigger.FAIL,
                                step=spec.name, attempt=attempt, duration=out.duration,
                                lane=lane, home=home,
                                error=f"step {spec.name!r} failed on attempt {attempt}: {error}")
                return
            doubt = doubt or out.unknown
            if not await self.fire(run, Trigger.RETRY_UNKNOWN if out.unknown else Trigger.RETRY,
                                   step=spec.name, attempt=attempt, duration=out.duration,
                                   error=error, lane=lane, home=home):
                return  # a branch whose group no longer waits for it
            await self._backoff(run, spec.retry, attempt, abortable=lane is None)
            attempt += 1

    async def _succeeded(self, run: SagaRun, spec: StepSpec, attempt: int,
                         out: _Outcome, lane: str | None, messages: list[Any], home: str
                         ) -> None:
        """The action returned: store its result (as JSON, once) and take the way on."""
        name = spec.name
        try:
            text = to_json(out.result, f"the result of step {name!r}", saga_id=run.saga_id,
                           step=name, root="result")
        except InvalidSagaData as exc:
            await self.fire(run, Trigger.INVALID_RESULT, step=name, attempt=attempt,
                            duration=out.duration, lane=lane, home=home,
                            error=f"{exc}; the action ran, so it is compensated too")
            return
        value = None if text == "null" else from_json(text)
        if lane is not None:  # the kernel decides whether the group goes on
            await self.fire(run, Trigger.SUCCEED, step=name, attempt=attempt, lane=lane,
                            home=home,
                            duration=out.duration, result=text, value=value,
                            messages=messages)
            return
        run.results[name] = value  # guards see it; a compensation too, if it comes to that
        try:
            edge = await self._route(run, Trigger.SUCCEED, value)
            if edge is not None:
                await self.fire(run, Trigger.SUCCEED, edge=edge, step=name, attempt=attempt,
                                duration=out.duration, result=text, value=value, strict=True,
                                messages=messages)
                return
            error = (f"step {name!r} succeeded but no transition out of it accepted the "
                     "result (every guard on its 'succeed' transitions said no): compensating "
                     "it; add a transition without a guard as the default")
            event = Trigger.NO_ROUTE
        except HookFailed as exc:
            error, event = f"step {name!r} succeeded, but {exc}", Trigger.HOOK_FAILED
        await self.fire(run, event, step=name, attempt=attempt, duration=out.duration,
                        error=error, result=text, value=value)

    async def _route(self, run: SagaRun, event: Any, value: Any = None) -> Edge | None:
        """The declared transition `event` takes (its guards asked), or None."""
        edge = hooks.unguarded(run.graph, run.state, event)
        if edge is not None:
            return edge
        return await hooks.route(run.graph, run.state, event,
                                 lambda state: run.context(state, event=event, result=value))

    async def _deadline(self, run: SagaRun, step: str, attempt: int | None,
                        duration: float | None, lane: str | None = None,
                        home: str | None = None) -> None:
        """The saga's deadline passed in `step`: its outcome is unknown, compensate it too."""
        run.log.info("saga.deadline", step=step, attempt=attempt)
        await self.fire(run, Trigger.TIMEOUT, step=step, attempt=attempt, duration=duration,
                        lane=lane, home=home,
                        error=f"the saga's deadline of {run.definition.deadline}s passed "
                              f"during step {step!r}")

    async def _compensate(self, run: SagaRun, spec: StepSpec, *, lane: str | None = None
                          ) -> None:
        """Undo a step as its compensation policy says; give up (stuck) when it runs out."""
        mine: list[Any] = []
        home = run.state
        attempt = run.pos.attempt + 1
        if lane is not None:
            attempt = next(x.attempt for x in run.pos.lanes if x.name == lane) + 1
        policy: Retry = spec.compensation_retry
        limit = max(policy.attempts, attempt)
        assert spec.compensation is not None
        while True:
            mine.clear()
            ctx = run.context(spec.name, attempt=attempt, result=run.results.get(spec.name),
                              outbox=mine)
            timeout = spec.timeout if spec.action is not None else None
            with telemetry.attempt_span(True, run.definition.name, run.saga_id, spec.name,
                                        attempt) as span:
                out = await self._attempt_once(run, spec.compensation, ctx, timeout,
                                               spec.undo_is_async, abortable=False)
                span.outcome(telemetry.outcome_of(out.exc, out.unknown))
            if out.exc is None:  # done, or (choreography) its command is on its way
                await self.fire(run, Trigger.SUCCEED if spec.confirm is None else Trigger.SENT,
                                step=spec.name, attempt=attempt, duration=out.duration,
                                lane=lane, home=home, messages=mine)
                return
            mine.clear()
            error = describe(out.exc)
            run.log.info("saga.compensation_failed", step=spec.name, attempt=attempt,
                         exc_info=out.exc)
            if attempt >= limit or not _retryable(policy, out.exc):
                why = stuck(run, f" after {attempt} attempt{'s' if attempt > 1 else ''}: "
                                 f"{error}; fix what makes the {spec.name!r} compensation "
                                 "fail")
                if await self.fire(run, Trigger.FAIL, step=spec.name, attempt=attempt,
                                   duration=out.duration, error=why, lane=lane, home=home):
                    run.log.error("saga.stuck", step=spec.name, state=FAILED, error=why)
                return
            if not await self.fire(run, Trigger.RETRY_UNKNOWN if isinstance(
                    out.exc, TimeoutError) else Trigger.RETRY, step=spec.name,
                    attempt=attempt, duration=out.duration, error=error, lane=lane, home=home):
                return
            await self._backoff(run, policy, attempt, abortable=False)
            attempt += 1

    async def _backoff(self, run: SagaRun, policy: Retry, attempt: int, *,
                       abortable: bool = True) -> None:
        delay = policy.delay(attempt)
        if run.deadline_at is not None and run.state in run.graph.defs:
            delay = max(0.0, min(delay, run.deadline_at - self.clock.time()))
        if delay > 0 and not abortable:
            await self.clock.sleep(delay)
        elif delay > 0:
            run.interruptible = True
            try:
                await self.clock.sleep(delay)
            except asyncio.CancelledError:
                if run.abort is None:
                    raise
                _uncancel()
            finally:
                run.interruptible = False

    async def _attempt_once(self, run: SagaRun, func: Callable[..., Any], ctx: Any,
                            timeout: float | None, is_async: bool, abortable: bool = True
                            ) -> _Outcome:
        """Call `func(ctx)` once under `timeout`; never raises an error.

        A coroutine function runs on the loop; a plain function in a thread, so that it
        blocks no other saga (a timeout then leaves its outcome unknown: it runs on).
        """
        clock = self.clock
        start = clock.monotonic()
        if abortable:
            run.interruptible = True
        try:
            call = func(ctx) if is_async else clock.run_sync(func, ctx)
            result = await (call if timeout is None else clock.wait_for(call, timeout))
            if not is_async and inspect.isawaitable(result):  # it returned a coroutine
                result = await (result if timeout is None else clock.wait_for(result, timeout))
        except asyncio.CancelledError as exc:
            if run.abort is None:
                raise
            _uncancel()
            return _Outcome(clock.monotonic() - start, exc=exc, unknown=True,
                            error=f"aborted during attempt {ctx.attempt}: {run.abort}")
        except Exception as exc:  # an OutcomeUnknown (a stuck sub-saga) may have happened
            return _Outcome(clock.monotonic() - start, exc=exc,
                            unknown=isinstance(exc, OutcomeUnknown))
        finally:
            if abortable:
                run.interruptible = False
        return _Outcome(clock.monotonic() - start, result=result)

    async def fire(
        self,
        run: SagaRun,
        event: Any,
        *,
        edge: Edge | None = None,
        step: str | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        error: str | None = None,
        result: str | None = None,
        value: Any = None,
        reason: str | None = None,
        inbox: str | None = None,
        strict: bool = False,
        lane: str | None = None,
        home: str | None = None,
        messages: list[Any] | None = None,
        consumed: int | None = None,
    ) -> bool:
        """Make the move the kernel decides for `event` and commit it; False if none.

        `event` is a name or an object with `.type` (an outside event, handed to guards and
        actions). A hook that raises in a forward move raises `HookFailed` and nothing is
        committed (`strict`), or is logged and the move goes on (a walk back, which must).
        """
        name = str(event) if isinstance(event, str) else event.type  # a Trigger as its text
        error = storable_text(error)  # made storable once: the move, the record and the log
        if lane is not None and run.lock is not None:  # a branch: one commit at a time
            async with run.lock:
                if run.state != home:
                    return False  # its group moved on (failed): it no longer waits for it
                move = kernel.decide(run.graph, run.pos, name, edge, error, lane)
                if move is None:
                    return False  # its group no longer waits for it
                await self.commit(run, move, step=step, attempt=attempt, duration=duration,
                                  error=error, result=result, value=value,
                                  messages=messages or ())
                return True
        move = kernel.decide(run.graph, run.pos, name, edge, error, lane)
        if move is None:
            return False
        calls = kernel.callbacks(run.graph, move)
        if calls:
            try:
                await hooks.run_callbacks(calls, event,
                                          lambda state: run.context(state, event=event),
                                          strict=strict or move.kind is Kind.FORWARD,
                                          log=run.log)
            except HookFailed:
                run.outbox = []  # what the failed move's hooks published does not leave
                raise
        try:
            await self.commit(run, move, step=step, attempt=attempt, duration=duration,
                              error=error, result=result, value=value, reason=reason,
                              inbox=inbox, messages=messages or (), consumed=consumed)
        except StoreRefused as exc:
            if result is not None and step is not None:
                run.results.pop(step, None)  # taken before the commit, for guards: not stored
            await self.give_up(run, exc, stuck(
                run, f": the store refused to write its move out of {run.state} "
                     f"({describe(exc)}), so it was set failed rather than run again; fix "
                     "what the store refused (see the error), or resolve it by hand"))
        return True

    async def give_up(self, run: SagaRun, exc: Exception, why: str) -> None:
        """Set the saga failed, saying `why`, rather than leave it to be run again and again
        (a write its store refuses, a failure of statesaga's own); if that cannot be written
        either, `exc` is raised. A retry (`statesaga retry`) undoes what it did."""
        move = kernel.decide(run.graph, run.pos, Trigger.GIVE_UP, None, why)
        if move is None:
            raise exc
        state = run.state
        try:
            await self.commit(run, move, error=why)
        except SagaError:
            raise exc from None
        run.log.error("saga.given_up", state=state, error=why)

    async def commit(self, run: SagaRun, move: kernel.Move, **fields: Any) -> None:
        """Write `move` (built by the kernel) to the store, then take it in memory."""
        await writer.write(self, run, move, **fields)

    async def deliver(self, run: SagaRun, event: Any, *, inbox: str | None = None,
                      error: str | None = None, consumed: int | None = None) -> bool:
        """An outside event for `run`: take the first transition its guards allow, or record
        it as ignored; a guard or hook that raises rejects it (recorded, then raised).
        `consumed`: the queued event it is (`EventQueue`), taken off the queue with it."""
        replies = run.graph.replies.get(run.state)
        if run.state in run.graph.undoes and (replies is None or event.type not in replies):
            return await self._ignored(run, event, inbox, consumed)  # only its reply moves it
        if replies is not None and event.type == replies[1]:
            error = stuck(run, f": its compensating command was refused ({error or event.type}); "
                                "fix the participant that handles it")
        try:
            edge = await self._route(run, event)
            moved = await self.fire(run, event, edge=edge, error=error, inbox=inbox,
                                    strict=True, consumed=consumed)
        except HookFailed as exc:
            await self.commit(run, kernel.ignore(run.pos, event.type), inbox=inbox,
                              reason=f"rejected: {exc}", consumed=consumed)
            raise exc.exc from exc
        return moved or await self._ignored(run, event, inbox, consumed)

    async def _ignored(self, run: SagaRun, event: Any, inbox: str | None,
                       consumed: int | None) -> bool:
        await self.commit(run, kernel.ignore(run.pos, event.type), inbox=inbox,
                          consumed=consumed,
                          reason=f"ignored: no transition on {event.type!r} from {run.state}")
        run.log.info("saga.event_ignored", state=run.state, trigger=event.type)
        return False


def stuck(run: SagaRun, why: str) -> str:
    """What a stuck saga's error says: where it is stuck, why, and the command that goes on."""
    return (f"saga {run.saga_id!r} is stuck in {run.state}{why}, then run `statesaga retry "
            f"{run.saga_id}` (or `await orchestrator.retry({run.saga_id!r})`)")


def _spec(run: SagaRun) -> StepSpec:
    """The step whose action or compensation runs in the saga's state."""
    graph = run.graph
    d = graph.defs.get(run.state)
    return d.step if d is not None else graph.defs[graph.undoes[run.state]].step


def _retryable(policy: Retry, exc: BaseException) -> bool:
    return policy.retryable(exc) and not isinstance(exc, SagaError)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
