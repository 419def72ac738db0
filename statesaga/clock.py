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
