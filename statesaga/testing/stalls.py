"""The stalled-worker scenarios of `explore_failures`: a worker pauses inside a step past
its lease (SIGSTOP, a long GC pause, a VM migration); another worker takes the saga over,
runs the step again under a higher fence (`ctx.fence`), then a later step fails and the saga
is compensated; the paused worker wakes and its call lands, late. The service must refuse
that call (its fence is lower than one it has seen, or its key was undone): if it does not,
an effect stays behind after the saga was compensated.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ..exceptions import SagaError
from ..orchestrator import Orchestrator
from ..records import SagaRecord
from .scenarios import Scenario, runnable

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..stores.base import SagaStore
    from .clock import FakeClock
    from .scenarios import Injector

T = TypeVar("T")
LEASE = 5.0


class Paused:
    """The clock of a paused process: its time stands still and its sleeps never end, so it
    renews no lease and times nothing out until it is woken."""

    def __init__(self, now: float) -> None:
        self._now = now

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        await asyncio.Event().wait()

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        return await aw

    async def run_sync(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(func, *args)


def stall_plan(machine: SagaStateMachine) -> list[Scenario]:
    """For each step with a compensation and a step after it (not a parallel branch): the
    worker stalls in it, another takes over, and the next step fails."""
    graph = machine.graph
    branches = {b for bs in graph.lanes.values() for b in bs}
    steps = [s for s in runnable(machine) if s not in branches]
    return [Scenario(f"a worker stalls in {s} past its lease; another takes over and "
                     f"compensates (its late call must be refused)", "compensated",
                     stall_in=s, raise_in=after)
            for s, after in itertools.pairwise(steps)
            if graph.defs[s].step.compensation is not None]


async def run_stalled(injector: Injector, machine: SagaStateMachine, data: Any,
                      store: SagaStore, clock: FakeClock, saga_id: str) -> SagaRecord:
    """Run the scenario: worker A stalls in the step; B (`clock`, `LEASE` later) recovers
    the saga and compensates it; then A wakes and its call goes out."""
    paused = Orchestrator(store=store, clock=Paused(clock.time()), lease=LEASE)
    first = asyncio.ensure_future(paused.run(machine, data, saga_id=saga_id))
    reached = asyncio.ensure_future(injector.stalled.wait())
    await asyncio.wait((first, reached), return_when=asyncio.FIRST_COMPLETED)
    reached.cancel()
    if not first.done():
        clock.advance(LEASE + 1)  # the paused worker's lease runs out
        other = Orchestrator(store=store, clock=clock, lease=LEASE, sagas=[machine])
        await other.recover()
        injector.wake.set()  # the paused worker goes on: its call goes out now
    with contextlib.suppress(SagaError):  # its commit is refused: it stops
        await first
    return await store.load(saga_id)


def late_problems(injector: Injector, scenario: Scenario, record: SagaRecord,
                  judged: bool) -> list[str]:
    """The stalled worker's call landed after the saga was compensated. `judged`: a
    snapshot of the outside world is compared, which tells whether it left anything behind
    (a call that landed and changed nothing is harmless); without one, landing is enough."""
    if (judged or scenario.stall_in is None or injector.late != "landed"
            or record.state != "compensated"):
        return []
    return [f"the call of {scenario.stall_in} from the worker that stalled past its lease "
            f"(fence {injector.late_fence}) landed after the saga was compensated by the one "
            "that took over: the service must refuse a fence lower than one it has seen "
            "(`ctx.fence`), or a key whose effect was undone"]
