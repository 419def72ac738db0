"""A writer thread: runs the calls handed to it one at a time, in order, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Call = tuple[asyncio.AbstractEventLoop, Callable[[], Any], "asyncio.Future[Any]"]


class WriterThread:
    """One thread for one connection. Each call's future is settled on its event loop with a
    single wake-up (an executor and `wrap_future` cost two, measurably); `busy` counts the
    calls handed and not settled yet, so the loop knows when the connection is free."""

    def __init__(self, name: str) -> None:
        self.busy = 0
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # A daemon: a store never closed must not hold the interpreter at exit (a write cut
        # off there is a crash, which SQLite survives).
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, call: Callable[[], T]) -> asyncio.Future[T]:
        """`call()` in the thread, after the calls handed before; cancelled before it starts,
        it never runs."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self.busy += 1
        self._calls.put((loop, call, future))
        return future

    def stop(self) -> None:
        """End the thread once the calls handed before have run."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (item := self._calls.get()) is not None:
            loop, call, future = item
            result: Any = None
            error: BaseException | None = None
            if not future.cancelled():
                try:
                    result = call()
                except BaseException as exc:  # handed back to the caller
                    error = exc
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._settle, future, result, error)

    def _settle(self, future: asyncio.Future[Any], result: Any,
                error: BaseException | None) -> None:
        self.busy -= 1
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
