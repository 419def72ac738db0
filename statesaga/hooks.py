"""Calling the user's guards and hooks around a move: the same under the orchestrator and
under `handle_event`, so that both give them the same `StepContext`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, cast

from . import kernel
from .exceptions import describe
from .graph import Edge, Graph

ContextFor = Callable[[str], Any]  # state -> the StepContext a callback of that state gets


class HookFailed(Exception):
    """A guard or hook raised during a move: the move was not made."""

    def __init__(self, what: str, exc: BaseException) -> None:
        super().__init__(f"{what} raised {describe(exc)}")
        self.exc = exc


async def call(func: Callable[..., Any], *args: Any) -> Any:
    """`func(*args)`, awaited if it returned an awaitable (sync or async callbacks)."""
    result = func(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def unguarded(graph: Graph, state: str, event: Any) -> Edge | None:
    """The transition `event` takes when the first candidate has no guard (no call needed)."""
    edges = kernel.candidates(graph, state, event if isinstance(event, str) else event.type)
    return edges[0] if edges and not edges[0].checks else None


async def route(graph: Graph, state: str, event: Any, context_for: ContextFor
                ) -> Edge | None:
    """The first declared transition for `event` in `state` whose guards all agree."""
    name = event if isinstance(event, str) else event.type
    for edge in kernel.candidates(graph, state, name):
        checks = edge.checks
        if not checks:
            return edge
        ctx = context_for(state)
        for check, wanted in checks:
            try:
                answer = await call(check, event, ctx)
            except Exception as exc:
                raise HookFailed(f"the guard of {state!r} -> {edge.dest!r}", exc) from exc
            if bool(answer) is not wanted:
                break
        else:
            return edge
    return None


async def run_callbacks(calls: tuple[tuple[str, str, object], ...], event: Any,
                        context_for: ContextFor, *, strict: bool, log: Any = None) -> None:
    """Run a move's callbacks (`kernel.callbacks`) in order; one that raises raises
    `HookFailed` (`strict`), or is logged and the move goes on (a walk back must)."""
    contexts: dict[str, Any] = {}
    for state, style, hook in calls:
        func = cast(Callable[..., Any], hook)
        ctx = contexts.get(state) or contexts.setdefault(state, context_for(state))
        try:
            await (call(func, event, ctx) if style == "event" else call(func, ctx))
        except Exception as exc:
            what = f"{getattr(func, '__name__', func)!s} (in {state})"
            if strict or log is None:
                raise HookFailed(what, exc) from exc
            log.warning("saga.hook_failed", hook=what, error=describe(exc))
