"""Time as the orchestrator sees it: real by default, controllable in tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Clock(Protocol):
    """Wall time, a monotonic time, sleeping, and a timeout around an awaitable."""

    def time(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        """Await `aw`; cancel it and raise `TimeoutError` after `timeout` seconds."""
        ...

    async def run_sync(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking `func(*args)` in a thread, so that the loop goes on meanwhile."""
        ...


class SystemClock:
    """The real clock and asyncio's timers."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.perf_counter()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        return await asyncio.wait_for(aw, timeout)

    async def run_sync(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.to_thread(func, *args)


class StoreClock(SystemClock):
    """The real clock, set to the store's: its `clock_offset` (seconds the store's clock is
    ahead of this machine's; PostgreSQL measures it when it connects) is added to the time.

    So every worker of one PostgreSQL reads one clock, the database's, for what it stores and
    compares: a saga's deadline and timers, history times. A machine whose clock drifted then
    neither fires a deadline early nor late (leases already run on the server's clock). A
    store without an offset (SQLite: one machine, one clock; memory) leaves the time as it is.
    """

    def __init__(self, store: object) -> None:
        self._store = store
        self._measures = hasattr(store, "clock_offset")  # PostgreSQL's stores do
        self._ready = not self._measures

    def time(self) -> float:
        if self._measures:
            return time.time() + float(self._store.clock_offset)  # type: ignore[attr-defined]
        return time.time()

    async def ready(self) -> None:
        """Open a store that measures its clock (PostgreSQL), once, so that the offset is
        known before a time is taken to be stored (a new saga's deadline)."""
        if not self._ready:
            await self._store.open()  # type: ignore[attr-defined]
            self._ready = True
