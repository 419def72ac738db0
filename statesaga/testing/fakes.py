"""Fake remote services that record effects by idempotency key and fail on a script."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import attrs


class ServiceError(Exception):
    """What a fake service raises when its script says so."""


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
    """

    def __init__(self, name: str, journal: list[str] | None = None) -> None:
        self.name = name
        self.effects: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.journal = journal if journal is not None else []  # 'service.op', in call order
        self._scripts: dict[str, _Script] = {}

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

    async def do(self, op: str, key: str, value: Any = True) -> Any:
        """Apply an effect under `key`, once: a repeat with the same key changes nothing."""
        await self._gate(op, key)
        return self.effects.setdefault(key, value)

    async def undo(self, op: str, key: str) -> bool:
        """Remove the effect under `key`; False if there was nothing to undo."""
        await self._gate(op, key)
        return self.effects.pop(key, None) is not None

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(self.effects)

    def __repr__(self) -> str:
        return f"<FakeService {self.name!r}: {len(self.effects)} effects, {len(self.calls)} calls>"
