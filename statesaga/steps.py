"""Steps: an action and the compensation that undoes it, as functions or as a `SagaStep` class."""

from __future__ import annotations

import abc
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .retry import ACTION_RETRY, COMPENSATION_RETRY, Retry

if TYPE_CHECKING:
    from .context import StepContext
    from .definition import SagaStateMachine

Callback = Callable[..., Any]


@attrs.define
class StepSpec:
    """One forward step: its action, optional compensation, and the policies that drive them."""

    name: str
    action: Callback | None
    compensation: Callback | None = None
    retry: Retry = ACTION_RETRY
    compensation_retry: Retry = COMPENSATION_RETRY
    timeout: float | None = None
    confirm: str | None = None  # the event that confirms the compensation (choreography)
    refuse: str | None = None  # the event that says the compensation failed
    is_async: bool = False  # the action is a coroutine function (else it runs in a thread)
    undo_is_async: bool = False  # the same for the compensation


class StepHandle:
    """What `@machine.step` returns: callable as the action; `.compensation` adds the undo."""

    def __init__(self, machine: SagaStateMachine, spec: StepSpec) -> None:
        self._machine = machine
        self.spec = spec
        self.name = spec.name

    def compensation(self, func: Callback) -> Callback:
        """Decorator: `func(ctx)` undoes this step. Returns `func` unchanged."""
        self._machine._set_compensation(self.name, func)
        return func

    def __call__(self, ctx: StepContext) -> Any:
        assert self.spec.action is not None
        return self.spec.action(ctx)

    def __repr__(self) -> str:
        return f"<step {self.name!r} of saga {self._machine.name!r}>"


class SagaStep(abc.ABC):
    """The pattern's class form: `execute(ctx)` does the step, `compensate(ctx)` undoes it.

    Both may be sync or async. `machine.step(BookHotel(service))` adds it, named from
    the class in snake_case (`book_hotel`) unless `name=` is given.
    """

    @abc.abstractmethod
    def execute(self, ctx: StepContext) -> Any:
        """Do the step; the return value (JSON) is the step's result."""

    @abc.abstractmethod
    def compensate(self, ctx: StepContext) -> Any:
        """Undo the step; must tolerate "nothing to undo"."""


def snake_case(name: str) -> str:
    """`BookHotel` -> `book_hotel`, `HTTPCall` -> `http_call`."""
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def qualified_name(func: object) -> str:
    """A stable name for a callable, for the definition's version hash."""
    inner = getattr(func, "func", func)  # functools.partial
    self_ = getattr(inner, "__self__", None)
    if self_ is not None and not isinstance(self_, type):
        owner = type(self_)
        return f"{owner.__module__}.{owner.__qualname__}.{getattr(inner, '__name__', '?')}"
    module = getattr(inner, "__module__", None) or type(inner).__module__
    qualname = getattr(inner, "__qualname__", None) or type(inner).__qualname__
    return f"{module}.{qualname}"
