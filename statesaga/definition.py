"""`SagaStateMachine`: one saga definition, built from steps or from an explicit graph."""

from __future__ import annotations

import contextlib
import inspect
import weakref
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, overload

import attrs

from . import hooks, kernel
from .context import StepContext
from .exceptions import SagaDefinitionError
from .graph import (
    Edge,
    Graph,
    StateDef,
    TransitionInfo,
    check_callable,
    check_name,
    compile_graph,
)
from .logs import logger as _log
from .retry import ACTION_RETRY, COMPENSATION_RETRY, Retry
from .steps import Callback, SagaStep, StepHandle, StepSpec, snake_case

if TYPE_CHECKING:
    from .typed import DataType

KNOWN: weakref.WeakValueDictionary[tuple[str, str], SagaStateMachine] = (
    weakref.WeakValueDictionary())
"""Every definition checked in this process, by (name, version): a record finds its drawing."""


class SagaStateMachine:
    """One saga definition: named states, the transitions between them, hooks, compensations.

    Build it from steps (`@machine.step`, `machine.step(name, action, compensation=...)`)
    or as an explicit graph (`add_state`, `add_transition`). It is checked as a whole on
    first use (or `validate()`): every problem is reported at once in one
    `SagaDefinitionError`. One definition is shared by all of its running instances.
    """

    def __init__(self, name: str, *, deadline: float | None = None, data: Any = None) -> None:
        self.name = name
        self.deadline = deadline
        self._defs: list[StateDef] = []
        self._group: str | None = None  # the parallel group steps are added to, if any
        self._edges: list[Edge] = []
        self._problems: list[str] = []
        self._graph: Graph | None = None
        self._frozen_by: str | None = None
        if (problem := check_name("saga", name)) is not None:
            self._problems.append(problem)
        if deadline is not None and not _positive(deadline):
            self._problems.append(f"deadline must be a number of seconds > 0, not {deadline!r}")
        # -- typed data (statesaga.typed): ctx.data is an instance, the store keeps JSON --
        self.data_type: DataType | None = None
        if data is not None:
            from .typed import DataType

            try:
                self.data_type = data if isinstance(data, DataType) else DataType(data)
            except TypeError as exc:
                self._problems.append(f"data: {exc}")
        # -- end of typed data --

    # -- building ---------------------------------------------------------------------

    def add_state(
        self,
        name: str,
        on_enter: Callback | None = None,
        on_exit: Callback | None = None,
        compensation: Callback | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Add a forward state; the first one added is the initial state.

        `on_enter(context)` and `on_exit(context)` run inside transitions; `compensation(ctx)`
        undoes what the state did, from its mirror state `compensating_<name>`. `timeout`:
        how long the state waits for its event (a durable timer) before its `timeout`
        transition, which compensates the state too (its outcome is unknown). A compensation
        made with `command(..., confirmed_by=...)` waits for its reply as long.
        """
        if timeout is not None and not _positive(timeout):
            self._problems.append(f"state {name!r}: timeout must be a number of seconds > 0, "
                                  f"not {timeout!r}")
            timeout = None
        self._add(StateDef(name=name, step=StepSpec(
            name=name, action=None, compensation=compensation, timeout=timeout,
            confirm=getattr(compensation, "confirmed_by", None),
            refuse=getattr(compensation, "failed_by", None)),
            on_enter=on_enter, on_exit=on_exit))

    def add_transition(
        self,
        source: str,
        dest: str,
        event: str,
        action: Callback | None = None,
        guard: Callback | None = None,
    ) -> None:
        """`event` in `source` moves to `dest`, if `guard(event, context)` is true.

        `action(event, context)` runs between the old state's on_exit and the new state's
        on_enter. `dest='compensated'` fails the saga there: it walks back down the mirror.
        """
        self._mutating()
        where = f"transition {source!r} -> {dest!r}"
        for problem in (check_name("event", event),
                        check_callable(f"{where}: action", action),
                        check_callable(f"{where}: guard", guard)):
            if problem is not None:
                self._problems.append(problem)
        self._add_edge(Edge(source, dest, event, action, guard))

    def _add_edge(self, edge: Edge) -> None:
        self._mutating()
        self._edges.append(edge)

    @classmethod
    def from_transitions(cls, name: str, config: Mapping[str, Any], *,
                         compensations: Mapping[str, Callback] | None = None,
                         deadline: float | None = None) -> SagaStateMachine:
        """A durable saga from the configuration a `transitions.Machine` is built from.

        `config` holds `states`, `transitions` (with `trigger`, `source`, `dest`,
        `conditions`, `unless`, `before`, `after`) and `initial`; `completed` and
        `compensated` need not be listed. `compensations` maps a state to what undoes it.
        Callbacks get the saga's `StepContext` (as with `send_event=True`), in the order
        `transitions` calls them.
        """
        from .adopt import from_transitions

        return from_transitions(cls(name, deadline=deadline), config, compensations or {})

    @overload
    def step(
        self, arg: str, action: Callback | SagaStateMachine | None = None, /, *,
        compensation: Callback | None = None, retry: Retry | None = None,
        compensation_retry: Retry | None = None, timeout: float | None = None,
        name: str | None = None, data: Callable[[StepContext], Any] | None = None,
    ) -> StepHandle: ...

    @overload
    def step(
        self, arg: None = None, /, *, compensation: Callback | None = None,
        retry: Retry | None = None, compensation_retry: Retry | None = None,
        timeout: float | None = None, name: str | None = None,
        data: Callable[[StepContext], Any] | None = None,
    ) -> Callable[[Callback], StepHandle]: ...

    @overload
    def step(
        self, arg: SagaStep | Callback | SagaStateMachine, /, *,
        compensation: Callback | None = None, retry: Retry | None = None,
        compensation_retry: Retry | None = None, timeout: float | None = None,
        name: str | None = None, data: Callable[[StepContext], Any] | None = None,
    ) -> StepHandle: ...

    def step(
        self,
        arg: str | SagaStep | Callback | SagaStateMachine | None = None,
        action: Callback | SagaStateMachine | None = None,
        /,
        *,
        compensation: Callback | None = None,
        retry: Retry | None = None,
        compensation_retry: Retry | None = None,
        timeout: float | None = None,
        name: str | None = None,
        data: Callable[[StepContext], Any] | None = None,
    ) -> Any:
        """Add a forward step: an action, its optional compensation, and their policies.

        `@machine.step` / `@machine.step(retry=...)` on a function (then
        `@<step>.compensation` on its undo), `machine.step("name", action, compensation=undo)`,
        or `machine.step(SagaStep instance)`. Steps run in the order they are added.
        """
        def add(step_name: str, func: Callback | SagaStateMachine | None,
                undo: Callback | None) -> StepHandle:
            if isinstance(func, SagaStateMachine):  # a sub-saga: `data(ctx)` is its data
                from .orchestrator_children import SubSaga

                sub = SubSaga(func, data)
                func, undo = sub, undo or sub.undo()
            return self._add_step(step_name, func, compensation=undo, retry=retry,
                                  compensation_retry=compensation_retry, timeout=timeout)

        if arg is None:
            return lambda func: add(name or _name_of(func), func, compensation)
        if isinstance(arg, str):
            return add(name or arg, action, compensation)
        if isinstance(arg, SagaStateMachine):
            return add(name or arg.name, arg, compensation)
        if isinstance(arg, SagaStep):
            return add(name or snake_case(type(arg).__name__), arg.execute,
                       compensation or arg.compensate)
        return add(name or _name_of(arg), arg, compensation)

    def _add_step(
        self,
        name: str,
        action: Callback | None,
        *,
        compensation: Callback | None,
        retry: Retry | None,
        compensation_retry: Retry | None,
        timeout: float | None,
    ) -> StepHandle:
        where = f"step {name!r}"
        if action is None:
            self._problems.append(f"{where}: has no action; pass `machine.step(name, action)`")
        for what, policy in (("retry", retry), ("compensation_retry", compensation_retry)):
            if policy is not None and not isinstance(policy, Retry):
                self._problems.append(f"{where}: {what} must be a statesaga.Retry, "
                                      f"not {policy!r}")
        if timeout is not None and not _positive(timeout):
            self._problems.append(f"{where}: timeout must be a number of seconds > 0, "
                                  f"not {timeout!r}")
        spec = StepSpec(
            name=name, action=action, compensation=compensation,
            retry=retry if isinstance(retry, Retry) else ACTION_RETRY,
            compensation_retry=(compensation_retry if isinstance(compensation_retry, Retry)
                                else COMPENSATION_RETRY),
            timeout=timeout,
        )
        self._add(StateDef(name=name, step=spec))
        return StepHandle(self, spec)

    def _add(self, state: StateDef) -> None:
        self._mutating()
        where = f"state {state.name!r}"
        if (problem := check_name("state", state.name)) is not None:
            self._problems.append(problem)
            return
        for problem in (check_callable(f"{where}: action", state.step.action),
                        check_callable(f"{where}: compensation", state.step.compensation),
                        check_callable(f"{where}: on_enter", state.on_enter),
                        check_callable(f"{where}: on_exit", state.on_exit)):
            if problem is not None:
                self._problems.append(problem)
        if any(d.name == state.name for d in self._defs):
            self._problems.append(f"state name {state.name!r} is used twice: names are unique "
                                  "within a saga; rename one")
            return
        if self._group is not None:
            if state.step.action is None:
                self._problems.append(f"{where}: only steps run in parallel group "
                                      f"{self._group!r}; add explicit states outside it")
            state = attrs.evolve(state, group=self._group)
        self._defs.append(state)

    @contextlib.contextmanager
    def parallel(self, name: str) -> Iterator[None]:
        """`with machine.parallel("book"): machine.step(...); machine.step(...)`: those steps
        run at once, as branches of the group `name`; the next step runs once every branch
        has succeeded. One failing cancels the others (their outcome is unknown: they are
        compensated too) and compensates the completed ones at once, then the steps before.
        """
        if self._group is not None:
            self._problems.append(f"parallel group {name!r} is inside group {self._group!r}: "
                                  "groups do not nest; put its steps in the outer group")
            yield
            return
        self._add(StateDef(name=name, step=StepSpec(name=name, action=None), parallel=True))
        self._group = name
        try:
            yield
        finally:
            self._group = None
        if not any(d.group == name for d in self._defs):
            self._problems.append(f"parallel group {name!r} has no steps: add them inside its "
                                  "`with` block")

    def _set_compensation(self, name: str, func: Callback) -> None:
        self._mutating()
        if (problem := check_callable(f"step {name!r}: compensation", func)) is not None:
            self._problems.append(problem)
        for d in self._defs:
            if d.name == name:
                if d.step.compensation is not None:
                    self._problems.append(f"step {name!r} has two compensations: keep one")
                d.step.compensation = func

    def _mutating(self) -> None:
        if self._frozen_by is not None:
            raise SagaDefinitionError(self.name, [
                f"it is already in use by {self._frozen_by} and can no longer change: "
                "define a new SagaStateMachine (its version identifies it to the store)"])
        self._graph = None

    def freeze(self, by: str) -> None:
        """Check the definition and refuse further changes (called when a saga may run it)."""
        self.validate()
        self._frozen_by = self._frozen_by or by

    # -- the compiled definition ------------------------------------------------------

    def validate(self) -> SagaStateMachine:
        """Check the whole definition; raise one `SagaDefinitionError` listing every problem."""
        self.graph  # noqa: B018
        return self

    @property
    def graph(self) -> Graph:
        if self._graph is None:
            graph, problems = compile_graph(self.name, self._defs, self._edges, self._problems)
            if graph is None:
                raise SagaDefinitionError(self.name, problems)
            for d in graph.defs.values():  # which code runs on the loop, which in a thread
                d.step.is_async = d.step.action is not None and is_async(d.step.action)
                d.step.undo_is_async = (d.step.compensation is not None
                                        and is_async(d.step.compensation))
            self._graph = graph
            KNOWN[(self.name, self.version)] = self
        return self._graph

    @property
    def version(self) -> str:
        """A stable hash of the graph, the callables' names and the data's class."""
        if self.data_type is None:
            return self.graph.version
        return self.data_type.versioned(self.graph.version)  # typed data (statesaga.typed)

    @property
    def states(self) -> tuple[str, ...]:
        """Forward states in order, then the mirror states, then the terminals."""
        return self.graph.states

    @property
    def transitions(self) -> tuple[TransitionInfo, ...]:
        return self.graph.transitions

    @property
    def initial(self) -> str:
        return self.graph.initial

    # -- running one event --------------------------------------------------------------

    async def handle_event(self, state: str, event: Any, data: Any = None) -> str:
        """Fire `event` (a name, or an object with `.type`) in `state`; return the new state.

        Order: the guard, on_exit of the old state, the transition's action, on_enter of the
        new one; each gets a `StepContext` (`.data`, `.event`), as under the orchestrator.
        An event with no transition from `state` leaves it unchanged. A saga's history is
        not known here, so a failure walks straight to `compensated`.
        """
        name = event if isinstance(event, str) else getattr(event, "type", None)
        if not isinstance(name, str):
            raise TypeError(f"event must be a name or have a `type` attribute, not {event!r}")
        graph = self.graph
        if state not in graph.states:
            raise SagaDefinitionError(self.name, [
                f"state {state!r} is not a state of this machine; its states are "
                f"{', '.join(graph.states)}"])
        view = MappingProxyType(dict(data or {})) if isinstance(data, Mapping | None) else data

        def context_for(at: str) -> StepContext:
            return StepContext("", at, view, {}, name=self.name, event=event, outbox=[])

        try:
            edge = await hooks.route(graph, state, event, context_for)
            move = kernel.decide(graph, kernel.assumed(graph, state), name, edge)
            if move is None:
                _log.debug("saga.event_ignored", saga=self.name, state=state, trigger=name)
                return state
            await hooks.run_callbacks(kernel.callbacks(graph, move), event, context_for,
                                      strict=True)
        except hooks.HookFailed as exc:
            raise exc.exc from None
        return move.dest

    def __repr__(self) -> str:
        return f"<SagaStateMachine {self.name!r} with {len(self._defs)} states>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Jupyter shows the machine as its diagram (SVG when `dot` is installed)."""
        from .diagrams import mimebundle

        return mimebundle(self)


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _name_of(func: Callable[..., Any]) -> str:
    name = getattr(func, "__name__", None)
    if not isinstance(name, str) or name == "<lambda>":
        return f"<unnamed {func!r}>"
    return name


def is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None))  # noqa: B004
