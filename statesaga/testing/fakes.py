"""Fake remote services that record effects by idempotency key and fail on a script."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import attrs


class ServiceError(Exception):
    """What a fake service raises when its script says so."""


class StaleCall(ServiceError):
    """A call a fake service refuses: a fence lower than one it has seen for the key, or
    an action whose key was already undone (a tombstone). It is what a stalled worker's
    late call gets from a service that fences."""


@attrs.define
class _Script:
    times: int | None  # None: always
    hang: bool
    error: type[BaseException]


class FakeService:
    """A pretend remote service.

    `await svc.do(op, key, value)` applies an effect once per idempotency key (a repeat
    returns the first value); `await svc.undo(op, key)` removes it and tolerates nothing to
    undo. Every call is in `calls`; `effects` is what the service holds now. `fail(op, ...)`
    scripts failures: `times` then succeed (None: always), or `hang` until cancelled.

    Fencing: a call given `fence=ctx.fence` is refused with `StaleCall` when the service
    has seen a higher fence for that key (a worker that stalled past its lease, calling
    after another took the saga over). An `undo` leaves a tombstone for its key, whether
    there was something to undo or not, so a `do` arriving after it with that key is
    refused too: the late action of a step already compensated never lands. Refused calls
    are in `calls` and `refused`, and change nothing.
    """

    def __init__(self, name: str, journal: list[str] | None = None) -> None:
        self.name = name
        self.effects: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.journal = journal if journal is not None else []  # 'service.op', in call order
        self._scripts: dict[str, _Script] = {}
        self.fences: dict[str, int] = {}  # the highest fence seen, per key
        self.tombstones: set[str] = set()  # the keys undone: their actions are refused
        self.refused: list[tuple[str, str, int | None]] = []  # (op, key, fence)

    def fail(self, op: str, *, times: int | None = None, hang: bool = False,
             error: type[BaseException] = ServiceError) -> FakeService:
        """Make `op` fail `times` times (None: always), raising `error` or hanging."""
        self._scripts[op] = _Script(times, hang, error)
        return self

    def heal(self, op: str | None = None) -> None:
        """Stop the scripted failures (of `op`, or all): the service works again."""
        if op is None:
            self._scripts.clear()
        else:
            self._scripts.pop(op, None)

    def reset(self) -> None:
        self.effects.clear()
        self.calls.clear()
        self.journal.clear()
        self._scripts.clear()
        self.fences.clear()
        self.tombstones.clear()
        self.refused.clear()

    async def _gate(self, op: str, key: str) -> None:
        self.calls.append((op, key))
        self.journal.append(f"{self.name}.{op}")
        script = self._scripts.get(op)
        if script is None or script.times == 0:
            return
        if script.times is not None:
            script.times -= 1
        if script.hang:
            await asyncio.Event().wait()
        raise script.error(f"{self.name}.{op} failed (scripted) for {key}")

    def _fence(self, op: str, key: str, fence: int | None, *, undone: bool = False) -> None:
        """Refuse a call with a lower fence than seen for `key` (or an action after its
        undo); otherwise remember the fence."""
        seen = self.fences.get(key)
        if fence is not None and seen is not None and fence < seen:
            why = f"fence {fence} is lower than {seen}, already seen for this key"
        elif undone:
            why = "this key was undone (a tombstone): its action comes too late"
        else:
            if fence is not None:
                self.fences[key] = fence
            return
        self.refused.append((op, key, fence))
        raise StaleCall(f"{self.name}.{op} refused for {key}: {why}")

    async def do(self, op: str, key: str, value: Any = True, *, fence: int | None = None
                 ) -> Any:
        """Apply an effect under `key`, once: a repeat with the same key changes nothing.

        Refused (`StaleCall`) with a fence lower than one seen for `key`, or after `key`
        was undone.
        """
        await self._gate(op, key)
        self._fence(op, key, fence, undone=key in self.tombstones)
        return self.effects.setdefault(key, value)

    async def undo(self, op: str, key: str, *, fence: int | None = None) -> bool:
        """Remove the effect under `key` and leave a tombstone for it; False if there was
        nothing to undo. Refused (`StaleCall`) with a fence lower than one seen for `key`."""
        await self._gate(op, key)
        self._fence(op, key, fence)
        self.tombstones.add(key)
        return self.effects.pop(key, None) is not None

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.effects)

    def __repr__(self) -> str:
        return f"<FakeService {self.name!r}: {len(self.effects)} effects, {len(self.calls)} calls>"
