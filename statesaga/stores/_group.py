"""Group commit: commits that become ready while one is being written share the next transaction.

Used by the SQLite and PostgreSQL stores. One batch is written at a time; commits that arrive
meanwhile queue up, and the next batch takes them all (after one turn of the event loop, so
that the sagas just released by the previous batch join it too). Each saga still waits for the
transaction that holds its own commit before its next action, so write-ahead holds; one saga's
conflict fails only that saga (the store's `flush` reports an outcome per commit). A batch
holds at most one write of each saga (a second one waits for the next batch): two writes of
one saga in one statement could not each be checked against the saga's revision, and a stale
one would be reported as applied with the live one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Outcome = tuple[bool, Any]  # (True, result) or (False, the exception for that commit)
_Queued = list[tuple[T, "asyncio.Future[Any]", str]]


class GroupCommit(Generic[T]):
    """Queues commits and hands them to `flush` in batches, one batch at a time."""

    def __init__(self, flush: Callable[[list[T]], Awaitable[list[Outcome]]]) -> None:
        self._flush = flush
        self._queue: _Queued[T] = []
        self._writing = False
        self._drainers: set[asyncio.Task[None]] = set()
        self._together = 1  # the last batch's size
        self._last = ""  # the saga that wrote last
        self.batches = 0  # transactions that carried commits (fewer than commits: grouped)

    async def __call__(self, item: T, saga_id: str) -> Any:
        """Commit `item` (a write of `saga_id`) in the next batch; its result or exception."""
        own: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((item, own, saga_id))
        alone, self._last = saga_id == self._last, saga_id
        try:
            if self._writing:  # a batch is being written: ours goes in the next one
                return await own
            self._writing = True  # we write this batch ourselves (no task: the idle case)
            try:
                await self._next_batch(alone)
            finally:
                if self._queue:  # commits came meanwhile: a task writes them, we go on
                    drainer = asyncio.ensure_future(self._drain())
                    self._drainers.add(drainer)
                    drainer.add_done_callback(self._drainers.discard)
                else:
                    self._writing = False
            return await own
        except asyncio.CancelledError:  # not taken into a batch yet: it is never written
            self._queue = [q for q in self._queue if q[1] is not own]
            raise

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._next_batch(False)
        finally:
            self._writing = False

    async def _next_batch(self, alone: bool) -> None:
        """Write the next batch. Unless one saga alone is writing (the same one as last time,
        and no other in the last batch), wait one turn first, so that every saga ready to
        commit joins it: with SQLite, whose writes never yield, only that wait groups them."""
        if not alone or self._together > 1:
            await asyncio.sleep(0)
        batch: _Queued[T] = []
        later: _Queued[T] = []
        sagas: set[str] = set()
        for queued in self._queue:  # one write per saga; its next one in the next batch
            (later if queued[2] in sagas else batch).append(queued)
            sagas.add(queued[2])
        self._queue = later
        if len(batch) == 1:
            await self._write(batch)
            return
        # Shielded: if the caller that writes it is cancelled, the others' commits still land.
        await asyncio.shield(asyncio.ensure_future(self._write(batch)))

    async def _write(self, batch: _Queued[T]) -> None:
        """Flush the batch and settle every commit's future with its own outcome."""
        try:
            outcomes = await self._flush([item for item, _, _ in batch])
        except Exception as exc:  # the whole transaction failed: every commit in it did
            outcomes = [(False, exc)] * len(batch)
        except BaseException:  # a lone commit cancelled (by its own caller) before it wrote
            for _, fut, _ in batch:
                fut.cancel()
            raise
        self.batches += 1
        self._together = len(batch)
        for (_, fut, _), (ok, value) in zip(batch, outcomes, strict=True):
            if fut.done():  # its caller was cancelled meanwhile
                continue
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)
