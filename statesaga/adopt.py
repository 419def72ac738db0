"""`SagaStateMachine.from_transitions`: a `transitions.Machine` configuration, made durable.

The configuration is the one `transitions.Machine(**config)` takes: `states` (names, or
dicts with `name`, `on_enter`, `on_exit`), `transitions` (dicts with `trigger`, `source`,
`dest`, `conditions`, `unless`, `before`, `after`, or lists in that order) and `initial`.
Callbacks are callables or importable dotted paths, and are called with the saga's
`StepContext`, as `transitions` calls them with its `EventData` when `send_event=True`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .graph import Edge
from .hooks import call
from .records import TERMINALS

if TYPE_CHECKING:
    from .definition import SagaStateMachine

_HARMLESS = {"auto_transitions", "send_event", "ignore_invalid_triggers", "queued", "model",
             "model_attribute", "name"}
_LIST_FIELDS = ("trigger", "source", "dest", "conditions", "unless", "before", "after")


class _Chain:
    """Several callbacks where statesaga takes one, called in order with the same context."""

    def __init__(self, funcs: tuple[Callable[..., Any], ...]) -> None:
        self.funcs = funcs
        self.__qualname__ = "+".join(getattr(f, "__qualname__", repr(f)) for f in funcs)
        self.__name__ = self.__qualname__

    async def __call__(self, *args: Any) -> None:
        for f in self.funcs:
            await call(f, *args)


class _Check:
    """A `transitions` condition, called with the context alone, as a statesaga guard."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.__qualname__ = self.__name__ = getattr(func, "__qualname__", repr(func))

    def __call__(self, event: Any, ctx: Any) -> Any:
        return self.func(ctx)


def from_transitions(machine: SagaStateMachine, config: Mapping[str, Any],
                     compensations: Mapping[str, Callable[..., Any]]) -> SagaStateMachine:
    """Fill `machine` from a `transitions` configuration; problems go to its definition check."""
    problems = machine._problems
    unknown = sorted(set(config) - _HARMLESS - {"states", "transitions", "initial"})
    if unknown:
        problems.append(
            f"configuration keys {', '.join(map(repr, unknown))} are not supported: statesaga "
            "takes `states`, `transitions` and `initial` (machine-wide callbacks such as "
            "before_state_change: put them on the transitions' `before` and `after`)")
    states = [_state(s, problems) for s in config.get("states", ())]
    names = [s["name"] for s in states if s["name"] not in TERMINALS]
    initial = config.get("initial")
    initial = getattr(initial, "name", initial)
    if initial is None or initial not in names:
        problems.append(f"`initial` must name one of the states ({', '.join(names) or 'none'}), "
                        f"not {initial!r}: a saga starts in a state it can leave")
    elif names[0] != initial:
        names.remove(initial)
        names.insert(0, initial)
    by_name = {s["name"]: s for s in states}
    for name in names:
        s = by_name[name]
        machine.add_state(name, on_enter=_callable(s.get("on_enter"), problems),
                          on_exit=_callable(s.get("on_exit"), problems),
                          compensation=compensations.get(name))
    for name in set(compensations) - set(names):
        problems.append(f"compensations name {name!r}, which is not a state of the machine")
    for raw in config.get("transitions", ()):
        for edge in _edges(raw, names, problems):
            machine._add_edge(edge)
    return machine


def _state(raw: Any, problems: list[str]) -> dict[str, Any]:
    if isinstance(raw, str):
        return {"name": raw}
    if isinstance(raw, Mapping):
        return dict(raw)
    name = getattr(raw, "name", None)
    if isinstance(name, str):  # a transitions.State, or an Enum member
        return {"name": name, "on_enter": getattr(raw, "on_enter", None),
                "on_exit": getattr(raw, "on_exit", None)}
    problems.append(f"state {raw!r} is neither a name, a dict nor a State")
    return {"name": repr(raw)}


def _edges(raw: Any, names: list[str], problems: list[str]) -> Iterable[Edge]:
    spec = dict(zip(_LIST_FIELDS, raw, strict=False)) if isinstance(raw, list | tuple) \
        else dict(raw)
    where = f"transition {spec.get('trigger')!r}"
    for key in sorted(set(spec) - set(_LIST_FIELDS)):
        problems.append(f"{where}: {key!r} is not supported (statesaga runs `conditions`, "
                        "`unless`, `before` and `after`)")
    dest = spec.get("dest")
    if dest is None:
        problems.append(f"{where}: internal transitions (dest=None) are not supported; a "
                        "saga's transition moves it, so give it a dest ('=' for the same state)")
        return
    sources = spec.get("source")
    sources = [n for n in names] if sources == "*" else (
        [sources] if isinstance(sources, str) else list(sources or ()))
    conditions = tuple(_Check(f) for f in _callables(spec.get("conditions"), problems))
    unless = tuple(_Check(f) for f in _callables(spec.get("unless"), problems))
    before = _callables(spec.get("before"), problems)
    after = _callables(spec.get("after"), problems)
    for source in sources:
        target = source if dest == "=" else dest
        yield Edge(source, target, spec["trigger"], conditions=conditions, unless=unless,
                   before=before, after=after)


def _callables(raw: Any, problems: list[str]) -> tuple[Callable[..., Any], ...]:
    items = [] if raw is None else [raw] if isinstance(raw, str) or callable(raw) else list(raw)
    out = []
    for item in items:
        func = _resolve(item, problems)
        if func is not None:
            out.append(func)
    return tuple(out)


def _callable(raw: Any, problems: list[str]) -> Callable[..., Any] | None:
    funcs = _callables(raw, problems)
    if not funcs:
        return None
    return funcs[0] if len(funcs) == 1 else _Chain(funcs)


def _resolve(item: Any, problems: list[str]) -> Callable[..., Any] | None:
    if callable(item):
        return item  # type: ignore[no-any-return]
    if isinstance(item, str) and "." in item:
        module, _, attr = item.rpartition(".")
        try:
            found = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            problems.append(f"callback {item!r} cannot be imported ({exc})")
            return None
        if callable(found):
            return found  # type: ignore[no-any-return]
    problems.append(f"callback {item!r} is not a callable or an importable dotted path "
                    "(a saga has no model whose methods could be named)")
    return None
