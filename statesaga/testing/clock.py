"""A controllable clock: sleeps, timeouts and deadlines run in virtual time, instantly."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class FakeClock:
    """Virtual time for an Orchestrator (`Orchestrator(clock=FakeClock())`).

    When every task is idle and no thread of `run_sync` runs, time jumps to the next
    sleeper or timeout, so a 300-second deadline test takes milliseconds. `advance(s)`
    moves time by hand. Meant for tests whose services are fakes: while a task waits on
    real network I/O the loop looks idle too.
    """

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self._now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self._threads = 0  # plain functions running in threads: time stands still meanwhile
        self._quiet: asyncio.Event | None = None

    def time(self) -> float:
        return self._now

    def monotonic(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by hand, waking every sleeper now due."""
        self._now += seconds
        while self._timers and self._timers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._timers)
            if not fut.done():
                fut.set_result(None)

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self._now + seconds, next(self._seq), fut))
        self._wake_driver()
        await fut

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        task = asyncio.ensure_future(aw)
        timer = asyncio.ensure_future(self.sleep(timeout))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            timer.cancel()
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        raise TimeoutError(f"timed out after {timeout}s (virtual time)")

    async def run_sync(self, func: Callable[..., T], *args: Any) -> T:
        """Run `func(*args)` in a thread; virtual time does not jump while it runs."""
        self._threads += 1
        try:
            return await asyncio.to_thread(func, *args)
        finally:
            self._threads -= 1
            if not self._threads and self._quiet is not None:
                self._quiet.set()

    def _wake_driver(self) -> None:
        if self._driver is None or self._driver.done():
            self._driver = asyncio.get_running_loop().create_task(self._jump())

    async def _jump(self) -> None:
        """Once nothing else can run, jump to the earliest timer."""
        loop: Any = asyncio.get_running_loop()
        idle_rounds = 0
        while self._timers:
            await asyncio.sleep(0)
            if all(fut.done() for _, _, fut in self._timers):  # nobody waits any more (their
                self._timers.clear()  # tasks were cancelled): stop now, without waiting for
                break  # an idle loop, which another clock's driver would never let it see
            if self._threads:
                self._quiet = asyncio.Event()
                await self._quiet.wait()
                continue
            if getattr(loop, "_ready", None):
                idle_rounds = 0
                continue
            idle_rounds += 1
            if idle_rounds < 3:
                continue
            idle_rounds = 0
            when, _, fut = heapq.heappop(self._timers)
            if fut.done():
                continue
            self._now = max(self._now, when)
            fut.set_result(None)
