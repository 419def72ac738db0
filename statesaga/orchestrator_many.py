"""Many sagas at once: `recover` finishes every unfinished one, `work` runs them forever.

One saga that fails here (a store that refuses its write, a bug in its code) is reported
and left; the others go on. A store that cannot be reached is logged once, then at most
once a minute, without the traceback's locals or the store's password.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from .exceptions import SagaConflict, StoreError, describe
from .execution import stuck
from .logs import logger as _log
from .records import TERMINALS, SagaRecord
from .saga_run import SagaRun
from .stores.base import store_time
from .stores.reads import reader

if TYPE_CHECKING:
    from .orchestrator import Orchestrator

QUIET = 60.0  # seconds between two logs of the same failing poll


@attrs.frozen
class RecoveryReport:
    """What `recover()` did: the sagas it finished, those held elsewhere, those it could not.

    `unregistered`: one line per definition (name, version) not registered here, with a
    count; `failed`: one line per saga that could not go on (its error), the rest went on.
    """

    recovered: tuple[SagaRecord, ...] = ()
    unregistered: tuple[str, ...] = ()
    failed: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.recovered)


async def recover(orch: Orchestrator, *, concurrency: int = 64, batch: int = 500,
                  progress: Callable[[int], None] | None = None) -> RecoveryReport:
    """`Orchestrator.recover`: see there."""
    recovered: builtins.list[SagaRecord] = []
    failed: builtins.list[str] = []
    gate = asyncio.Semaphore(concurrency)
    definitions = list(orch._definitions)

    async def one(rec: SagaRecord) -> None:
        async with gate:
            try:
                recovered.append(await _drive(orch, rec))
            except SagaConflict as exc:  # another worker took it over: it goes on there
                _log.info("saga.lost_lease", saga_id=rec.saga_id, error=str(exc))
            except Exception as exc:
                failed.append(f"{rec.saga_id}: {describe(exc)}")
                _log.error("saga.recover_failed", saga_id=rec.saga_id, error=describe(exc))
            if progress is not None:
                progress(len(recovered))

    tried: set[str] = set()
    while True:
        claimed = [r for r in await orch.store.claim(
            orch.owner, now=store_time(orch.clock), lease=orch.lease, limit=batch,
            definitions=definitions) if r.saga_id not in tried]
        if not claimed:
            break
        tried.update(r.saga_id for r in claimed)  # one that failed is not tried again
        await asyncio.gather(*(one(rec) for rec in claimed))
    unregistered = []
    for found in await reader(orch.store).count_by_definition():  # never one per saga
        if (found.name, found.version) not in orch._definitions:
            known = [v for (n, v) in orch._definitions if n == found.name]
            unregistered.append(
                f"{found.count} unfinished saga(s) of {found.name} version "
                f"{found.version}, which is not registered (registered: "
                f"{', '.join(known) or 'none'})")
    for line in unregistered:
        _log.warning("saga.unregistered_version", detail=line)
    return RecoveryReport(tuple(recovered), tuple(unregistered), tuple(failed))


async def work(orch: Orchestrator, *, concurrency: int = 16, poll: float = 0.5,
               stop: asyncio.Event | None = None) -> int:
    """`Orchestrator.work`: see there."""
    stop = stop if stop is not None else asyncio.Event()
    running: set[asyncio.Task[Any]] = set()
    driven = 0
    stopping = asyncio.ensure_future(stop.wait())
    quiet = _Quiet(orch)
    try:
        while not stop.is_set():
            claimed: builtins.list[SagaRecord] = []
            free = concurrency - len(running)
            if free > 0:
                try:
                    claimed = await orch.store.claim(
                        orch.owner, now=store_time(orch.clock), lease=orch.lease, limit=free,
                        definitions=list(orch._definitions))
                    quiet.ok()
                except StoreError as exc:  # a database hiccup must not kill the worker
                    quiet.failed(exc)
            for rec in claimed:
                task = asyncio.ensure_future(_work_one(orch, rec))
                running.add(task)
                task.add_done_callback(running.discard)
                driven += 1
            # nothing more to claim now, or no free slot: wait for either to change
            await asyncio.wait({stopping, *running}, timeout=poll,
                               return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
        orch._runner.stopping = True
        try:
            if running:
                await asyncio.wait(running)
        finally:
            orch._runner.stopping = False
    return driven


async def _drive(orch: Orchestrator, record: SagaRecord) -> SagaRecord:
    """Run a claimed saga on. If statesaga itself fails on it (not its store, which may come
    back, nor another worker), the saga is set failed, saying why: claimed again, it would
    fail again, at every poll."""
    run = SagaRun(orch.definition(record), record)
    try:
        return await orch._drive(run, resumed=True)
    except (SagaConflict, StoreError):
        raise
    except Exception as exc:
        if run.state not in TERMINALS and not run.lost:
            await orch._runner.give_up(run, exc, stuck(
                run, f": running it failed ({describe(exc)}), so it was set failed rather "
                     "than run again and again; fix the cause (a failure of statesaga "
                     "itself: please report it)"))
        raise


async def _work_one(orch: Orchestrator, record: SagaRecord) -> None:
    try:
        await _drive(orch, record)
    except SagaConflict as exc:  # its lease expired and another worker took it over
        _log.warning("saga.lost_lease", saga_id=record.saga_id, error=str(exc))
    except Exception as exc:
        _log.error("saga.worker_error", saga_id=record.saga_id, error=describe(exc))


class _Quiet:
    """A failing poll is logged once, then at most once a minute, without a traceback."""

    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch
        self.last: float | None = None
        self.missed = 0

    def failed(self, exc: BaseException) -> None:
        now = self.orch.clock.monotonic()
        if self.last is not None and now - self.last < QUIET:
            self.missed += 1
            return
        more = {"failed_since_last_log": self.missed} if self.missed else {}
        _log.warning("saga.claim_failed", error=describe(exc), **more)
        self.last, self.missed = now, 0

    def ok(self) -> None:
        if self.last is not None:
            _log.warning("saga.claim_recovered", store=self.orch.store.url)
        self.last, self.missed = None, 0
