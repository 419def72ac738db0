"""Runs one saga: attempts with retries and timeouts, each transition committed before the next.

The saga is the model of its definition's shared `transitions` machine. Which mirror
state a failure leads to is decided by `undo`: the compensable states whose effect may
exist, in the order they happened, derived from the history.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import structlog

from .clock import Clock
from .codec import to_json
from .context import StepContext
from .definition import SagaStateMachine
from .exceptions import SagaError
from .graph import (
    ABORT,
    FAIL,
    FAILURE,
    FORWARD,
    MIRROR,
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
    SagaRecord,
    SagaStatus,
    Transition,
    status_of,
)
from .retry import Retry
from .stores.base import Commit, SagaStore

_log = structlog.get_logger("statesaga")


class SagaRun:
    """One saga in this process: the model its machine moves, and what it needs to go on."""

    __slots__ = ("abort", "cause", "created_at", "data", "deadline_at", "definition", "error",
                 "history", "interruptible", "log", "outbox", "pending", "results", "revision",
                 "saga_id", "state", "target", "undo")

    def __init__(self, definition: SagaStateMachine, record: SagaRecord) -> None:
        self.definition = definition
        self.saga_id = record.saga_id
        self.state = record.state
        self.target: str | None = None
        self.data = MappingProxyType(dict(record.data))
        self.results: dict[str, Any] = dict(record.results)
        self.history = list(record.history)
        self.revision = record.revision
        self.error = record.error
        self.created_at = record.created_at
        self.deadline_at = None if record.deadline_at is None else record.deadline_at.timestamp()
        self.pending = record.status is SagaStatus.PENDING
        self.abort: str | None = None
        self.interruptible = False
        self.undo: list[str] = []
        self.cause: str | None = None
        self.outbox: list[Any] = []  # messages published by hooks, for the next commit
        self.log: Any = _log.bind(saga_id=record.saga_id, saga=definition.name)
        graph = definition.graph
        for t in self.history:
            kind = graph.kinds.get((t.source or "", t.event, t.dest))
            if kind is not None:
                _move_undo(graph, self.undo, t.source or "", kind)
                if kind in (FAILURE, UNKNOWN):
                    self.cause = t.error

    def hook_context(self) -> StepContext:
        """The context a hook of this saga gets: messages it publishes join the commit."""
        return StepContext(self.saga_id, self.state, self.data, self.results,
                           name=self.definition.name, outbox=self.outbox)

    def record(self) -> SagaRecord:
        updated = self.history[-1].at if self.history else self.created_at
        return SagaRecord(
            saga_id=self.saga_id, name=self.definition.name, version=self.definition.version,
            state=self.state, status=status_of(self.state, self.pending), data=dict(self.data),
            results=dict(self.results), error=self.error, history=tuple(self.history),
            created_at=self.created_at, updated_at=updated, revision=self.revision,
            deadline_at=None if self.deadline_at is None else
            datetime.fromtimestamp(self.deadline_at, UTC))


def _move_undo(graph: Graph, undo: list[str], source: str, kind: str) -> None:
    """How one transition of `kind` out of `source` changes the undo stack."""
    if kind in (FORWARD, UNKNOWN):
        if graph.compensable(source):
            undo.append(source)
    elif kind == MIRROR:
        undo.pop()


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
            elif d.step.action is None:
                return  # an explicit state: it waits for an outside event
            else:
                await self._forward(run, d.step)

    def _attempt(self, run: SagaRun) -> int:
        """The number of the attempt about to run in the current state (from the history)."""
        n = 1
        for t in reversed(run.history):
            if t.source != t.dest or t.dest != run.state:
                break
            n += 1
        return n

    def _in_doubt(self, run: SagaRun) -> bool:
        for t in reversed(run.history):
            if t.source != t.dest or t.dest != run.state:
                return False
            if t.event == RETRY_UNKNOWN:
                return True
        return False

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
            ctx = StepContext(run.saga_id, spec.name, run.data, run.results, attempt=attempt,
                              name=run.definition.name)
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
                                           result=(spec.name, result_json)):
                        run.results.pop(spec.name)
                        await self.fire(run, TIMEOUT, step=spec.name, attempt=attempt, error=(
                            f"step {spec.name!r} succeeded but no transition out of it accepted "
                            "the result (every guard on its 'succeed' transitions said no): "
                            "compensating it; add a transition without a guard as the default"))
                    return
            if run.abort is not None:
                return  # the attempt was aborted: `drive` fires the abort
            assert out.exc is not None
            if isinstance(out.exc, TimeoutError):
                out.unknown = True
                if deadline_bound:
                    await self._deadline(run, spec.name, attempt, out.duration)
                    return
            unknown = unknown or out.unknown
            error = out.error or _describe(out.exc)
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
            ctx = StepContext(run.saga_id, spec.name, run.data, run.results, attempt=attempt,
                              result=run.results.get(spec.name), name=run.definition.name)
            out = await self._attempt_once(run, spec.compensation, ctx, spec.timeout,
                                           abortable=False)
            if out.exc is None:
                await self.fire(run, SUCCEED, step=spec.name, attempt=attempt,
                                duration=out.duration)
                return
            error = _describe(out.exc)
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
        result: tuple[str, str] | None = None,
        reason: str | None = None,
        payload: Any = None,
        context: Any = None,
        messages: list[Any] | None = None,
    ) -> bool:
        """Move the saga on `event` and commit the transition; False if nothing fired."""
        graph = run.definition.graph
        source = run.state
        run.target = self._target(graph, run, source, event)
        trigger = run.definition.machine.events.get(event)
        run.outbox = messages if messages is not None else []
        try:
            if trigger is None or not await trigger.trigger(run, event=payload or event,
                                                            context=context):
                return False
        except BaseException:
            run.state = source  # a hook raised: nothing was committed, the saga stays put
            raise
        dest = run.state
        kind = graph.kinds[(source, event, dest)]
        _move_undo(graph, run.undo, source, kind)
        if kind in (FAILURE, UNKNOWN):
            run.cause = error
        if dest == FAILED:
            run.error = error
        elif dest.startswith(MIRROR_PREFIX) or dest == COMPENSATED:
            run.error = run.cause
        at = datetime.fromtimestamp(self.clock.time(), UTC)
        transition = Transition(at, source, dest, event, step, attempt, error, duration, reason)
        run.history.append(transition)
        run.revision += 1
        done = dest in TERMINALS
        commit = Commit(
            saga_id=run.saga_id, revision=run.revision, state=dest,
            status=status_of(dest), error=run.error, transition=transition, result=result,
            owner=None if done else self.owner,
            lease_until=None if done else self.clock.time() + self.lease,
            messages=run.outbox, waiting=self._waits(graph, dest))
        abort = await self.store.commit(commit)
        if abort is not None and run.abort is None and not done:
            run.abort = abort
        run.log.info("saga.transition", source=source, dest=dest, trigger=event, step=step,
                     attempt=attempt,
                     duration_ms=None if duration is None else round(duration * 1000, 3))
        if kind in (FAILURE, UNKNOWN):
            run.log.warning("saga.compensating", step=step, trigger=event, error=error)
        return True

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


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()
