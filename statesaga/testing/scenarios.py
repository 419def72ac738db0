"""Failure scenarios and their injection: a copy of the machine whose callables misbehave on cue.

Injected failures are honest about outcomes: a raised action raises *before* the real
call (it did not happen); a timeout or a passing deadline strikes *after* it (it happened,
but nobody heard back), which is what makes a compensation that relies on `ctx.result`,
or a step that ignores its idempotency key, show up. A branch of a parallel group does
its real call at once, then reports back in its turn (`turns`): the scenario says whether
the branches finish in the order declared or in reverse.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
from collections.abc import Callable
from typing import Any

import attrs

from ..definition import SagaStateMachine
from .turns import Turns


class InjectedFailure(Exception):
    """Raised by statesaga.testing where a scenario makes a step or compensation fail."""


class SimulatedCrash(BaseException):
    """The process "dies" at a store boundary (a BaseException: nothing may catch it)."""


@attrs.define
class Scenario:
    """One failure scenario: what misbehaves, and the outcome a correct saga reaches."""

    name: str
    expect: str  # "completed", "compensated" or "failed"
    raise_in: str | None = None  # the step whose action raises
    raise_times: int | None = None  # None: always
    timeout_in: str | None = None  # the step whose action times out after running
    hang_in: str | None = None  # the step whose action hangs after running (deadline)
    undo_fails: str | None = None  # the step whose compensation raises
    undo_times: int | None = None
    crash_at: int | None = None  # the n-th store write (1-based) ...
    crash_after: bool = False  # ... crashes before it is applied, or after
    events: tuple[str, ...] = ()  # explicit graphs: the events sent, in order
    reverse: bool = False  # a group's branches finish in reverse order (else as declared)
    answer_late: bool = False  # the branches still at work when a failure moves their
    # group on answer while it is being committed (else they are cancelled)
    stall_in: str | None = None  # the step whose first call stalls past the lease
    # (`stalls`: another worker takes over; the stalled call goes out after it is done)
    skipped: str | None = None  # why it was not run


@attrs.define
class Journal:
    """What really happened in the outside world, recorded by the injected wrappers."""

    ran: list[str] = attrs.Factory(list)  # actions that completed their real call
    undone: list[str] = attrs.Factory(list)  # compensations that completed their real call


class Injector:
    """Wraps a machine's callables so the current scenario can make them misbehave."""

    def __init__(self, machine: SagaStateMachine) -> None:
        self.machine = machine
        self.scenario = Scenario("happy path", "completed")
        self.journal = Journal()
        self.turns = Turns(machine.graph.lanes)
        self._left: dict[str, int | None] = {}
        self.stalled, self.wake = asyncio.Event(), asyncio.Event()
        self.late: str | None = None  # the stalled call: "landed" or "refused"
        self.late_fence: int | None = None
        self.children: list[SagaStateMachine] = []  # the copies of the sub-sagas' machines
        self.copy = self._copy()

    def begin(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.journal = Journal()
        self.turns.begin(scenario.reverse, scenario.answer_late)
        self._left = {"raise": scenario.raise_times, "undo": scenario.undo_times, "stall": 1}
        self.stalled, self.wake = asyncio.Event(), asyncio.Event()
        self.late = self.late_fence = None

    async def _stall(self, func: Callable[..., Any], ctx: Any) -> Any:
        """The first call of the stalling step: it waits, then goes out late."""
        self.stalled.set()
        await self.wake.wait()
        self.late_fence = getattr(ctx, "fence", None)
        try:
            result = await _call(func, ctx)
        except Exception:
            self.late = "refused"
            raise
        self.late = "landed"
        return result

    def _take(self, which: str) -> bool:
        left = self._left.get(which)
        if left is None:
            return True
        if left <= 0:
            return False
        self._left[which] = left - 1
        return True

    def _copy(self, machine: SagaStateMachine | None = None, prefix: str = ""
              ) -> SagaStateMachine:
        """The machine again, every action and compensation wrapped; all else the same
        (groups, policies), but a compensation is done when it returns: nobody here sends
        the reply a confirmed one (choreography) would wait for. A sub-saga step runs a
        copy of its child machine, whose steps are named "<step>/<child step>" here."""
        from ..orchestrator_children import SubSaga

        m = machine or self.machine
        copy = SagaStateMachine(m.name, deadline=m.deadline, data=m.data_type)
        for d in m._defs:
            spec = d.step
            action = spec.action
            if isinstance(action, SubSaga):  # registered beside it: its wrapper hides it
                child = self._copy(action.machine, f"{prefix}{d.name}/")
                self.children.append(child)
                action = SubSaga(child, action.data)
            name = prefix + d.name
            copy._defs.append(attrs.evolve(d, step=attrs.evolve(
                spec,
                action=None if action is None else self._action(name, action),
                compensation=(None if spec.compensation is None
                              else self._undo(name, spec.compensation)),
                confirm=None, refuse=None)))
        copy._edges = list(m._edges)
        copy._problems = list(m._problems)
        return copy.validate()

    def _action(self, step: str, func: Callable[..., Any]) -> Callable[..., Any]:
        turns = self.turns

        async def injected_action(ctx: Any) -> Any:
            s = self.scenario
            turns.arrive(step, False)
            try:
                if s.raise_in == step and self._take("raise"):
                    await turns.turn(step, False)
                    raise InjectedFailure(f"{step} raised (injected, before doing anything)")
                if s.stall_in == step and self._take("stall"):
                    return await self._stall(func, ctx)
                result = await _call(func, ctx)
                self.journal.ran.append(step)
                if s.hang_in == step:
                    await asyncio.Event().wait()  # until the saga's deadline cancels it
                await turns.turn(step, False)
            except asyncio.CancelledError:
                turns.leave(step, False)
                raise
            if s.timeout_in == step:
                raise TimeoutError(f"{step} timed out (injected, after it ran)")
            return result
        injected_action.__qualname__ = f"explore.{step}"
        return injected_action

    def _undo(self, step: str, func: Callable[..., Any]) -> Callable[..., Any]:
        turns = self.turns

        async def injected_compensation(ctx: Any) -> Any:
            turns.arrive(step, True)
            try:
                if self.scenario.undo_fails == step and self._take("undo"):
                    await turns.turn(step, True)
                    raise InjectedFailure(f"the compensation of {step} raised (injected)")
                result = await _call(func, ctx)
                self.journal.undone.append(step)
                await turns.turn(step, True)
            except asyncio.CancelledError:
                turns.leave(step, True)
                raise
            return result
        injected_compensation.__qualname__ = f"explore.undo_{step}"
        return injected_compensation


async def _call(func: Callable[..., Any], ctx: Any) -> Any:
    result = func(ctx)
    return await result if inspect.isawaitable(result) else result


REVERSED = " (branches finishing in reverse)"


def runnable(machine: SagaStateMachine) -> list[str]:
    """The steps that run something, in order, a parallel group's branches in its place.

    A sub-saga step (a step that runs a child saga) is one step here: it raises, times
    out and is compensated like any other; its child's own steps are `subsagas`' plan.
    """
    graph = machine.graph
    out: list[str] = []
    for s in graph.forward:
        out += list(graph.lanes[s]) if s in graph.lanes else (
            [s] if graph.defs[s].step.action is not None else [])
    return out


def plan(machine: SagaStateMachine) -> list[Scenario]:
    """Every step and compensation failure scenario of a step-based machine; those of a
    group's branch twice, its branches finishing as declared and in reverse."""
    graph = machine.graph
    steps = runnable(machine)
    branches = {b for bs in graph.lanes.values() for b in bs}
    out: list[Scenario] = []
    for s in steps:
        retried = graph.defs[s].step.retry.attempts > 1
        for reverse in (False, True) if s in branches else (False,):
            more = REVERSED if reverse else ""
            out += [
                Scenario(f"{s} raises once{more}", "completed" if retried else "compensated",
                         raise_in=s, raise_times=1, reverse=reverse),
                Scenario(f"{s} always raises{more}", "compensated", raise_in=s,
                         reverse=reverse),
                Scenario(f"{s} times out (outcome unknown){more}", "compensated",
                         timeout_in=s, reverse=reverse),
            ]
            deadline = Scenario(f"the deadline passes in {s}{more}", "compensated",
                                hang_in=s, reverse=reverse)
            if machine.deadline is None:
                deadline.skipped = "the machine has no deadline"
            out.append(deadline)
    for group in graph.lanes.values():
        for failing, answering in itertools.pairwise(group):
            out.append(Scenario(f"{failing} raises while {answering} answers", "compensated",
                                raise_in=failing, answer_late=True))
    if steps:
        last = steps[-1]
        for c in (s for s in steps if graph.defs[s].step.compensation is not None):
            # make the last step fail so that c's compensation runs (time out if c is last)
            timeout_in, raise_in = (last, None) if c == last else (None, last)
            for reverse in (False, True) if c in branches else (False,):
                more = REVERSED if reverse else ""
                out += [
                    Scenario(f"compensation of {c} raises once{more}", "compensated",
                             undo_fails=c, undo_times=1, timeout_in=timeout_in,
                             raise_in=raise_in, reverse=reverse),
                    Scenario(f"compensation of {c} always raises{more}", "failed",
                             undo_fails=c, timeout_in=timeout_in, raise_in=raise_in,
                             reverse=reverse),
                ]
    return out


def crash_plan(writes: int, *, failing: str | None, reverse: bool = False
               ) -> list[Scenario]:
    """A crash before and after each of `writes` store writes, on one path."""
    path = f"{failing} failing" if failing else "happy path"
    path += ", branches finishing in reverse" if reverse else ""
    expect = "compensated" if failing else "completed"
    return [Scenario(f"crash {'after' if after else 'before'} write {n} ({path})", expect,
                     raise_in=failing, crash_at=n, crash_after=after, reverse=reverse)
            for n in range(1, writes + 1) for after in (False, True)]


def event_paths(machine: SagaStateMachine, bound: int) -> tuple[list[str], list[Scenario]]:
    """For a machine that waits for events: the first complete path's events, and scenarios.

    Scenarios: every complete path of at most `bound` events, and, after every prefix, every
    failure event (a transition to `compensated`) of the state reached, and its timer
    running out (`timeout`; `abort` by a person if it has none). Steps on the way (states
    with an action) are assumed to succeed.
    """
    graph = machine.graph
    waits = {s for s in graph.forward if graph.waits(s)}
    if not waits:
        return [], []
    forward: dict[str, list[tuple[str, str]]] = {}
    failing: dict[str, list[str]] = {}
    for t in graph.transitions:
        if t.source in waits and t.kind == "forward":
            forward.setdefault(t.source, []).append((t.event, t.dest))
        elif t.source in waits and t.kind == "failure" and t.event != "fail":
            failing.setdefault(t.source, [])
            if t.event not in failing[t.source]:
                failing[t.source].append(t.event)
    succeed = {t.source: t.dest for t in graph.transitions
               if t.kind == "forward" and t.event == "succeed" and t.source not in waits}
    out: list[Scenario] = []
    complete: list[list[str]] = []

    def walk(state: str, events: list[str]) -> None:
        while state in succeed:  # steps move on by themselves
            state = succeed[state]
        if state == "completed":
            complete.append(events)
            out.append(Scenario(" → ".join(events) or "(no events)", "completed",
                                events=tuple(events)))
            return
        d = graph.defs[state]
        timer = d.step.timeout is not None or machine.deadline is not None
        for f in [*failing.get(state, []), "timeout" if timer else "abort"]:
            out.append(Scenario(" → ".join([*events, f]), "compensated",
                                events=(*events, f)))
        if len(events) < bound:
            for event, dest in forward.get(state, []):
                walk(dest, [*events, event])

    walk(graph.initial, [])
    return (min(complete, key=len) if complete else []), out
