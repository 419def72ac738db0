"""Sub-sagas: a step that runs another `SagaStateMachine` as a child saga.

`machine.step("pay", payment, data=lambda ctx: {...})` runs `payment` as a saga of its own,
`"<parent id>/pay"`, in the same store: durable, visible in `list` and `show`, driven by
any worker. The parent's step waits for it; the child's results are the step's result.
A child that compensated itself failed the step; a stuck child leaves the step's outcome
unknown. Compensating the step compensates the child along its own mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .exceptions import LeaseHeld, OutcomeUnknown, SagaError, SagaNotFound, SagaNotRegistered
from .records import SagaStatus

if TYPE_CHECKING:
    from .context import StepContext
    from .definition import SagaStateMachine
    from .graph import Graph
    from .orchestrator import Orchestrator
    from .records import SagaRecord
    from .stores.base import SagaStore

CURRENT: contextvars.ContextVar[Orchestrator] = contextvars.ContextVar("statesaga_orchestrator")
WAIT = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)  # a child waiting for an event, or run elsewhere


class ChildCompensated(SagaError):
    """The child saga compensated itself: the parent's step did not happen."""


class ChildStuck(OutcomeUnknown):
    """The child saga is stuck: part of it may have happened; the parent's step is undone."""


def sub_sagas(graph: Graph) -> dict[str, SagaStateMachine]:
    """The steps of `graph` that run a child saga, and the child's machine, in order."""
    return {s: d.step.action.machine for s, d in graph.defs.items()
            if isinstance(d.step.action, SubSaga)}


def child_id(ctx: StepContext) -> str:
    return f"{ctx.saga_id}/{ctx.step}"


class SubSaga:
    """A step's action that runs `machine` as a child saga (`data(ctx)` its data)."""

    def __init__(self, machine: SagaStateMachine,
                 data: Callable[[StepContext], Any] | None = None) -> None:
        self.machine = machine
        self.data = data
        self.__qualname__ = self.__name__ = f"subsaga.{machine.name}"  # for the version

    async def __call__(self, ctx: StepContext) -> dict[str, Any]:
        orch = CURRENT.get()
        saga_id = child_id(ctx)
        data = self.data(ctx) if self.data is not None else {}
        try:
            record = await _finished(orch, self.machine, data, saga_id)
        except asyncio.CancelledError:  # the parent's step stops (abort, deadline, lease lost):
            with contextlib.suppress(Exception):  # the child's revert may take it at once
                await asyncio.shield(orch.store.release(orch.owner, [saga_id]))
            raise
        if record.status is SagaStatus.COMPLETED:
            return dict(record.results)
        if record.status is SagaStatus.COMPENSATED:
            raise ChildCompensated(f"sub-saga {saga_id!r} compensated itself: {record.error}",
                                   saga_id=saga_id)
        raise ChildStuck(f"sub-saga {saga_id!r} is stuck: {record.error}", saga_id=saga_id)

    def undo(self) -> Callable[[StepContext], Any]:
        """The compensation of the step: the child walks back along its own mirror."""
        async def revert(ctx: StepContext) -> None:
            await _reverted(CURRENT.get(), child_id(ctx))

        revert.__qualname__ = f"subsaga.{self.machine.name}.undo"
        return revert


async def _finished(orch: Orchestrator, machine: SagaStateMachine, data: Any,
                    saga_id: str) -> SagaRecord:
    """Run the child (or go on with it) until it ends, wherever it is driven."""
    for turn in itertools.count():
        try:
            record = await orch.run(machine, data, saga_id=saga_id)
        except LeaseHeld:  # another worker drives it right now
            record = await orch.store.load(saga_id)
        if record.is_terminal:
            return record
        await orch.clock.sleep(WAIT[min(turn, len(WAIT) - 1)])  # it waits for an event
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: the loop has no end)


async def _reverted(orch: Orchestrator, saga_id: str) -> None:
    """Compensate the child, whatever it got to: done, running, waiting; nothing if it never
    started; `ChildStuck` while its own compensation is stuck (the parent's retries wait)."""
    for turn in itertools.count():
        try:
            record = await orch.store.load(saga_id)
        except SagaNotFound:
            return  # it never started: nothing to undo
        if record.status is SagaStatus.COMPENSATED:
            return
        if record.is_stuck:
            raise ChildStuck(f"sub-saga {saga_id!r} is stuck compensating: {record.error}",
                             saga_id=saga_id)
        if record.status is SagaStatus.COMPLETED:
            await orch._revert(record)
        else:
            try:
                await orch.abort(saga_id, reason="its parent saga is compensating")
            except SagaNotRegistered:  # nobody here can undo it: looking again never ends
                raise
            except SagaError:  # it ended meanwhile: look again
                pass
        await orch.clock.sleep(WAIT[min(turn, len(WAIT) - 1)])


async def family(store: SagaStore, record: SagaRecord
                 ) -> tuple[SagaRecord | None, list[SagaRecord]]:
    """Read only: the saga `record` is a sub-saga of (None unless "<id>/<step>" names a saga
    in `store` that ran that step), and its own sub-sagas, in the order they started.
    Found by id alone, so it works for definitions this process does not know."""
    from .stores.reads import SagaQuery, reader

    prefix = record.saga_id + "/"
    page = await reader(store).query_sagas(SagaQuery(id_prefix=prefix, limit=100))
    direct = sorted((s.created_at, s.saga_id) for s in page.sagas
                    if s.saga_id.startswith(prefix) and "/" not in s.saga_id[len(prefix):])
    children = [await store.load(saga_id) for _, saga_id in direct]
    head, _, step = record.saga_id.rpartition("/")
    parent = None
    if head:
        with contextlib.suppress(SagaNotFound):
            found = await store.load(head)
            if any(t.step == step for t in found.history):
                parent = found
    return parent, children
