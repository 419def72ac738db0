"""Runs sagas: attempts with retries and timeouts, each transition committed before the next."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from .clock import Clock
from .codec import to_json
from .context import StepContext
from .exceptions import SagaError, describe
from .graph import (
    ABORT,
    FAIL,
    FAILURE,
    RETRY,
    RETRY_UNKNOWN,
    SUCCEED,
    TIMEOUT,
    UNKNOWN,
    Graph,
    mirror,
)
from .records import (
    COMPENSATED,
    FAILED,
    MIRROR_PREFIX,
    TERMINALS,
    Transition,
    status_of,
)
from .retry import Retry
from .saga_run import SagaRun, move_undo
from .stores.base import Commit, SagaStore, store_time

_log = structlog.get_logger("statesaga")


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
        graph = run.definition.graph
        if resumed and not run.pending and run.state not in TERMINALS:
            d = graph.defs.get(run.state)
            spec = d.step if d is not None else graph.defs[run.state[len(MIRROR_PREFIX):]].step
            if (spec.action if d is not None else spec.compensation) is not None:
                attempt = self._attempt(run)
                await self.fire(run, RETRY_UNKNOWN, step=spec.name, attempt=attempt,
                                error=f"outcome unknown: the process running attempt {attempt} "
                                      "stopped before it was recorded")
        run.pending = False
        while run.state not in TERMINALS and not self.stopping:
            if run.abort is not None and not run.state.startswith(MIRROR_PREFIX):
                await self.fire(run, ABORT, error=f"aborted: {run.abort}", reason=run.abort)
                continue
            d = graph.defs.get(run.state)
            if d is None:
                await self._compensate(run, graph, graph.defs[run.state[len(MIRROR_PREFIX):]]
                                       .step)
            elif d.step.action is not None:
                await self._forward(run, d.step)
            else:  # an explicit state: it waits for an outside event, or its timer
                due = self.due(run)
                if due is None or due > self.clock.time():
                    return
                await self.fire(run, TIMEOUT, step=run.state, error=(
                    f"no event came in {run.state} within its timeout of {d.step.timeout}s"
                    if run.deadline_at is None or due < run.deadline_at else
                    f"the saga's deadline of {run.definition.deadline}s passed in {run.state}"))

    @staticmethod
    def _retries(run: SagaRun) -> list[str]:
        """The retry events since the saga entered its current state (ignored events skipped)."""
        out = []
        for t in reversed(run.history):
            if t.source != t.dest or t.dest != run.state:
                break
            if t.event in (RETRY, RETRY_UNKNOWN):
                out.append(t.event)
        return out

    def _attempt(self, run: SagaRun) -> int:
        """The number of the attempt about to run in the current state (from the history)."""
        return 1 + len(self._retries(run))

    def _in_doubt(self, run: SagaRun) -> bool:
        return RETRY_UNKNOWN in self._retries(run)

    async def _forward(self, run: SagaRun, spec: Any) -> None:
        attempt = self._attempt(run)
        limit = max(spec.retry.attempts, attempt)
        unknown = self._in_doubt(run)
        while run.abort is None:
            timeout, deadline_bound = spec.timeout, False
            if run.deadline_at is not None:
                left = run.deadline_at - self.clock.time()
                if left <= 0:
                    await self._deadline(run, spec.name, attempt, None)
                    return
                if timeout is None or left < timeout:
                    timeout, deadline_bound = left, True
            run.outbox = []  # what this attempt publishes leaves only if it succeeds
            ctx = StepContext(run.saga_id, spec.name, run.data, run.results, attempt=attempt,
                              name=run.definition.name, outbox=run.outbox)
            out = await self._attempt_once(run, spec.action, ctx, timeout)
            if out.exc is None:
                try:
                    result_json = to_json(out.result, f"the result of step {spec.name!r}",
                                          saga_id=run.saga_id, step=spec.name)
                except SagaError as exc:
                    out = _Outcome(out.duration, exc=exc, error=str(exc), unknown=True)
                else:
                    run.results[spec.name] = out.result
                    if not await self.fire(run, SUCCEED, step=spec.name, attempt=attempt,
                                           duration=out.duration,
                                           result=result_json):
                        run.results.pop(spec.name)
                        await self.fire(run, TIMEOUT, step=spec.name, attempt=attempt, error=(
                            f"step {spec.name!r} succeeded but no transition out of it accepted "
                            "the result (every guard on its 'succeed' transitions said no): "
                            "compensating it; add a transition without a guard as the default"))
                    return
            run.outbox = []
            if run.abort is not None:
                return  # the attempt was aborted: `drive` fires the abort
            assert out.exc is not None
            if isinstance(out.exc, TimeoutError):
                out.unknown = True
                if deadline_bound:
                    await self._deadline(run, spec.name, attempt, out.duration)
                    return
            unknown = unknown or out.unknown
            error = out.error or describe(out.exc)
            run.log.info("saga.attempt_failed", step=spec.name, attempt=attempt,
                         exc_info=out.exc)
            if attempt >= limit or not _retryable(spec.retry, out.exc):
                await self.fire(run, TIMEOUT if unknown else FAIL, step=spec.name,
                                attempt=attempt, duration=out.duration,
                                error=f"step {spec.name!r} failed on attempt {attempt}: {error}")
                return
            await self.fire(run, RETRY_UNKNOWN if out.unknown else RETRY, step=spec.name,
                            attempt=attempt, duration=out.duration, error=error)
            await self._backoff(run, spec.retry, attempt)
            attempt += 1

    async def _deadline(self, run: SagaRun, step: str, attempt: int | None,
                        duration: float | None) -> None:
        """The saga's deadline passed in `step`: its outcome is unknown, compensate it too."""
        run.log.warning("saga.deadline", step=step, attempt=attempt)
        await self.fire(run, TIMEOUT, step=step, attempt=attempt, duration=duration, error=(
            f"the saga's deadline of {run.definition.deadline}s passed during step {step!r}"))

    async def _compensate(self, run: SagaRun, graph: Graph, spec: Any) -> None:
        attempt = self._attempt(run)
        policy: Retry = spec.compensation_retry
        limit = max(policy.attempts, attempt)
        while True:
            run.outbox = []
            ctx = StepContext(run.saga_id, spec.name, run.data, run.results, attempt=attempt,
                              result=run.results.get(spec.name), name=run.definition.name,
                              outbox=run.outbox)
            timeout = spec.timeout if spec.action is not None else None
            out = await self._attempt_once(run, spec.compensation, ctx, timeout,
                                           abortable=False)
            if out.exc is None:
                await self.fire(run, SUCCEED, step=spec.name, attempt=attempt,
                                duration=out.duration)
                return
            run.outbox = []
            error = describe(out.exc)
            run.log.warning("saga.compensation_failed", step=spec.name, attempt=attempt,
                            exc_info=out.exc)
            if attempt >= limit or not _retryable(policy, out.exc):
                stuck = (f"saga {run.saga_id!r} is stuck in {run.state} after {attempt} "
                         f"attempt{'s' if attempt > 1 else ''}: {error}; fix what makes the "
                         f"{spec.name!r} compensation fail, then run `statesaga retry "
                         f"{run.saga_id}` (or `await orchestrator.retry({run.saga_id!r})`)")
                await self.fire(run, FAIL, step=spec.name, attempt=attempt,
                                duration=out.duration, error=stuck)
                run.log.error("saga.stuck", step=spec.name, state=FAILED, error=stuck)
                return
            await self.fire(run, RETRY_UNKNOWN if isinstance(out.exc, TimeoutError) else RETRY,
                            step=spec.name, attempt=attempt, duration=out.duration, error=error)
            await self._backoff(run, policy, attempt)
            attempt += 1

    async def _backoff(self, run: SagaRun, policy: Retry, attempt: int) -> None:
        delay = policy.delay(attempt)
        if run.deadline_at is not None and not run.state.startswith(MIRROR_PREFIX):
            delay = max(0.0, min(delay, run.deadline_at - self.clock.time()))
        if delay > 0:
            run.interruptible = True
            try:
                await self.clock.sleep(delay)
            except asyncio.CancelledError:
                if run.abort is None:
                    raise
                _uncancel()
            finally:
                run.interruptible = False

    async def _attempt_once(self, run: SagaRun, func: Callable[..., Any], ctx: StepContext,
                            timeout: float | None, abortable: bool = True) -> _Outcome:
        """Call `func(ctx)` once, sync or async, under `timeout`; never raises an error."""
        clock = self.clock
        start = clock.monotonic()
        run.interruptible = abortable
        try:
            result = func(ctx)  # a plain function runs inline: nothing can interrupt it
            if inspect.isawaitable(result):
                result = await (result if timeout is None else clock.wait_for(result, timeout))
        except asyncio.CancelledError as exc:
            if run.abort is None:
                raise
            _uncancel()
            return _Outcome(clock.monotonic() - start, exc=exc, unknown=True,
                            error=f"aborted during attempt {ctx.attempt}: {run.abort}")
        except Exception as exc:
            return _Outcome(clock.monotonic() - start, exc=exc)
        finally:
            run.interruptible = False
        return _Outcome(clock.monotonic() - start, result=result)

    async def fire(
        self,
        run: SagaRun,
        event: str,
        *,
        step: str | None = None,
        attempt: int | None = None,
        duration: float | None = None,
        error: str | None = None,
        result: str | None = None,
        reason: str | None = None,
        payload: Any = None,
        inbox: str | None = None,
    ) -> bool:
        """Move the saga on `event` and commit the transition; False if nothing fired."""
        graph = run.definition.graph
        source = run.state
        run.target = self._target(graph, run, source, event)
        trigger = run.definition.machine.events.get(event)
        try:
            if trigger is None or not await trigger.trigger(run, event=payload or event,
                                                            context=None):
                return False
        except BaseException:
            run.state = source  # a hook raised: nothing was committed, the saga stays put
            run.outbox = []
            raise
        dest = run.state
        kind = graph.kinds[(source, event, dest)]
        move_undo(graph, run.undo, source, kind)
        if kind in (FAILURE, UNKNOWN):
            run.cause = error
        if dest == FAILED:
            run.error = error
        elif dest.startswith(MIRROR_PREFIX) or dest == COMPENSATED:
            run.error = run.cause
        at = datetime.fromtimestamp(self.clock.time(), UTC)
        transition = Transition(at, source, dest, event, step, attempt, error, duration, reason,
                                worker=self.owner)
        run.history.append(transition)
        run.revision += 1
        done = dest in TERMINALS
        waiting = self._waits(graph, dest)
        keep = not (done or waiting)  # a finished or waiting saga needs no lease: release it
        commit = Commit(
            saga_id=run.saga_id, revision=run.revision, state=dest,
            status=status_of(dest), error=run.error, transition=transition, result=result,
            owner=self.owner if keep else None,
            now=store_time(self.clock), lease=self.lease if keep else None,
            messages=run.outbox, waiting=waiting, inbox=inbox,
            wake_at=self.due(run) if not done else None)
        run.outbox = []
        abort = (await self.store.commit(commit)).abort
        if abort is not None and run.abort is None and not done:
            run.abort = abort
        run.log.info("saga.transition", source=source, dest=dest, trigger=event, step=step,
                     attempt=attempt,
                     duration_ms=None if duration is None else round(duration * 1000, 3))
        if kind in (FAILURE, UNKNOWN):
            run.log.warning("saga.compensating", step=step, trigger=event, error=error)
        return True

    @staticmethod
    def due(run: SagaRun) -> float | None:
        """When a saga waiting in its state times out (its state's timeout, or the deadline)."""
        d = run.definition.graph.defs.get(run.state)
        if d is None or d.step.action is not None:
            return None
        times = [] if run.deadline_at is None else [run.deadline_at]
        if d.step.timeout is not None:
            entered = next(t.at for t in reversed(run.history)
                           if t.dest == run.state and t.source != t.dest)
            times.append(entered.timestamp() + d.step.timeout)
        return min(times, default=None)

    @staticmethod
    def _waits(graph: Graph, state: str) -> bool:
        """Does the saga wait in `state` for an outside event (nothing of its own to run)?"""
        d = graph.defs.get(state)
        return d is not None and d.step.action is None

    @staticmethod
    def _target(graph: Graph, run: SagaRun, source: str, event: str) -> str | None:
        """The mirror state a walk back from `source` on `event` must reach."""
        if event == SUCCEED and not source.startswith(MIRROR_PREFIX):
            return None
        if event in (TIMEOUT, ABORT) and graph.compensable(source):
            return mirror(source)
        stack = run.undo[:-1] if event == SUCCEED else run.undo
        return mirror(stack[-1]) if stack else COMPENSATED


def _retryable(policy: Retry, exc: BaseException) -> bool:
    return policy.retryable(exc) and not isinstance(exc, SagaError)


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
