"""A set of fake services behind an example saga, addressable by step name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..context import StepContext
from ..testing.fakes import FakeService


class ExampleServices:
    """Fake services of one example, with each step mapped to (service, op, undo op)."""

    def __init__(self, ops: Mapping[str, tuple[str, str, str | None]]) -> None:
        self._ops = dict(ops)
        self.journal: list[str] = []
        self.services = {svc: FakeService(svc, self.journal) for svc, _, _ in ops.values()}

    def __getattr__(self, name: str) -> FakeService:
        try:
            return self.__dict__["services"][name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(name) from None

    def fail_at(self, step: str, *, times: int | None = None, hang: bool = False) -> None:
        """Make `step`'s action fail (`times` times; None: always), or hang."""
        svc, op, _ = self._op(step)
        self.services[svc].fail(op, times=times, hang=hang)

    def fail_compensation(self, step: str, *, times: int | None = None) -> None:
        """Make `step`'s compensation fail (`times` times; None: always)."""
        svc, _, undo = self._op(step)
        if undo is None:
            raise ValueError(f"step {step!r} has no compensation")
        self.services[svc].fail(undo, times=times)

    def undo_of(self, step: str, owner: Callable[..., Any]
                ) -> Callable[[StepContext], Awaitable[None]]:
        """The compensation of `step`: its service's undo op, by the step's key and fence
        (named as if `owner`, the function building the saga, defined it: the version
        hashes that name)."""
        svc, _, op = self._op(step)
        if op is None:
            raise ValueError(f"step {step!r} has no compensation")
        service = self.services[svc]

        async def run(ctx: StepContext) -> None:
            await service.undo(op, ctx.idempotency_key, fence=ctx.fence)

        run.__qualname__ = f"{owner.__qualname__}.undo_{step}"
        run.__module__ = owner.__module__
        return run

    def _op(self, step: str) -> tuple[str, str, str | None]:
        if step not in self._ops:
            raise ValueError(f"unknown step {step!r}; the steps are {', '.join(self._ops)}")
        return self._ops[step]

    def reset(self) -> None:
        for svc in self.services.values():
            svc.reset()

    def calls(self) -> list[str]:
        """Every call to every service, in call order: 'service.op'."""
        return list(self.journal)

    def snapshot(self) -> dict[str, Any]:
        """What the outside world holds now, of what can be undone (JSON-comparable).

        A service with no undo (a sent notification stays sent) is left out: compensating
        a saga cannot restore it, so comparing it would only restate that.
        """
        undoable = {svc for svc, _, undo in self._ops.values() if undo is not None}
        return {name: svc.snapshot() for name, svc in self.services.items()
                if name in undoable}
