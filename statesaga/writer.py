"""The one writer: a move the kernel decided goes to the store, then into the saga in memory.

A commit whose outcome is unknown (the connection failed while it was in flight) is never
guessed at: the saga is read again, and the move is taken if the store has it, written
again if it has not, and given up (`RevisionConflict`) if someone else moved the saga.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from . import kernel, telemetry
from .codec import storable_text
from .exceptions import CommitOutcomeUnknown, RevisionConflict, StoreError
from .logs import quiet
from .records import TERMINALS, Kind, Transition
from .stores.base import Commit, SagaStore, Signals, store_time

if TYPE_CHECKING:
    from .execution import Runner
    from .saga_run import SagaRun

REREAD = (0.05, 0.2, 0.5, 1.0, 2.0, 5.0)  # waits between reading an unknown outcome back


async def write(runner: Runner, run: SagaRun, move: kernel.Move, *, step: str | None = None,
                attempt: int | None = None, duration: float | None = None,
                error: str | None = None, result: str | None = None, value: Any = None,
                reason: str | None = None, inbox: str | None = None,
                messages: Sequence[Any] = (), consumed: int | None = None) -> None:
    """Write `move` (built by the kernel) to the store, then take it in memory."""
    graph, clock = run.graph, runner.clock
    now = clock.time()
    entered = now if move.dest != move.source or move.edge is not None else run.entered_at
    transition, commit = kernel.record(
        graph, move, saga_id=run.saga_id, revision=run.revision + 1,
        at=datetime.fromtimestamp(now, UTC), step=step, attempt=attempt,
        error=error and storable_text(error), duration=duration,
        reason=reason and storable_text(reason), worker=runner.owner, result=result,
        owner=runner.owner, now=store_time(clock), lease=runner.lease,
        messages=[*messages, *run.outbox] if messages else run.outbox, inbox=inbox,
        consumed=consumed, wake_at=kernel.due(graph, move.dest, entered, run.deadline_at))
    try:
        signals = await _commit(runner, run, commit)
    except BaseException:
        run.outbox = []
        raise
    run.revision += 1
    if result is not None and step is not None:
        run.results[step] = value
    run.apply(move, transition, entered)
    run.queued = signals.events
    if move.dest in TERMINALS:
        telemetry.saga_ended(run.definition.name, move.dest)
    elif signals.abort is not None and run.abort is None:
        run.abort = signals.abort
    info = run.log.info
    if info is not quiet:  # the fields are only worth building for a log that shows them
        info("saga.transition", source=move.source or None, dest=move.dest,
             trigger=move.event, step=step, attempt=attempt,
             duration_ms=None if duration is None else round(duration * 1000, 3))
        if move.kind is Kind.FAILURE or move.kind is Kind.UNKNOWN:
            info("saga.compensating", step=step, trigger=move.event, error=error)


async def _commit(runner: Runner, run: SagaRun, commit: Commit) -> Signals:
    """`store.commit`, and the truth when its outcome is unknown."""
    store: SagaStore = runner.store
    for wait in (*REREAD, None):
        try:
            return await store.commit(commit)
        except CommitOutcomeUnknown:
            run.log.warning("saga.commit_outcome_unknown", revision=commit.revision)
        while True:  # read the saga back before anything else is done with it
            try:
                found = await store.load(run.saga_id)
                break
            except StoreError:
                if wait is None:
                    raise
                await runner.clock.sleep(wait)
        if found.revision >= commit.revision:
            if found.revision == commit.revision and _same(found.history[-1],
                                                          commit.transition):
                return Signals()  # it was written: go on
            raise RevisionConflict(
                f"saga {run.saga_id!r} was moved by another writer while this one's commit "
                f"was in doubt (revision {found.revision}): it goes on there",
                saga_id=run.saga_id, state=found.state)
        if wait is None:
            break
        await runner.clock.sleep(wait)  # not written: write it again (same revision)
    raise CommitOutcomeUnknown(
        f"saga {run.saga_id!r}: the store kept failing while writing revision "
        f"{commit.revision}; it was not written, and the saga waits for a worker",
        saga_id=run.saga_id, state=run.state)


def _same(stored: Transition, mine: Transition) -> bool:
    return (stored.source, stored.dest, stored.event, stored.step, stored.attempt,
            stored.worker) == (mine.source, mine.dest, mine.event, mine.step, mine.attempt,
                               mine.worker)
