"""`Orchestrator`: runs sagas against a store, recovers them, and lets people operate them."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import os
import socket
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from . import hooks, kernel, orchestrator_events, orchestrator_many, telemetry
from .clock import Clock, StoreClock
from .codec import check_id, from_json, to_json
from .definition import SagaStateMachine
from .events import Event
from .exceptions import (
    IdempotencyConflict,
    InvalidSagaData,
    LeaseHeld,
    SagaConflict,
    SagaError,
    SagaNotRegistered,
    describe,
)
from .execution import Runner
from .logs import logger as _log
from .orchestrator_children import CURRENT, sub_sagas
from .orchestrator_many import RecoveryReport
from .records import TERMINALS, SagaRecord, SagaStatus, Trigger
from .saga_run import SagaRun
from .stores.base import SagaStore, store_time
from .stores.memory import InMemoryStore
from .stores.reads import SagaPage, SagaQuery, SagaSummary, list_summaries, reader

PARKED = 10_000  # waiting sagas kept in memory; the rest are loaded when their event comes


class Orchestrator:
    """Runs saga definitions against a store (no store: an `InMemoryStore`).

    `run` runs a saga to its end and returns its record whatever the outcome; `start`
    persists one for workers (`work`) or `recover`; `abort`, `retry`, `get` and `list`
    operate sagas. A saga is leased to the orchestrator driving it; a lease not renewed
    for `lease` seconds (a dead process) lets another orchestrator take it over.
    """

    def __init__(
        self,
        store: SagaStore | None = None,
        sagas: Iterable[SagaStateMachine] = (),
        *,
        clock: Clock | None = None,
        lease: float = 15.0,
        owner: str | None = None,
    ) -> None:
        if lease <= 0:
            raise ValueError(f"lease must be > 0 seconds, not {lease!r}")
        self.store: SagaStore = store if store is not None else InMemoryStore()
        self.clock: Clock = clock if clock is not None else StoreClock(self.store)
        self.lease = lease
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._definitions: dict[tuple[str, str], SagaStateMachine] = {}
        self._registered: set[int] = set()
        self._active: dict[str, tuple[SagaRun, asyncio.Future[SagaRecord]]] = {}
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._parked: OrderedDict[str, SagaRun] = OrderedDict()  # waiting for an event
        self._heartbeat: asyncio.TimerHandle | None = None
        self._beats: set[asyncio.Task[None]] = set()
        self._runner = Runner(self.store, self.clock, self.owner, lease)
        for machine in sagas:
            self.register(machine)
        telemetry.track_parked(self)  # telemetry: the parked-sagas gauge

    # -- definitions -------------------------------------------------------------------

    def register(self, machine: SagaStateMachine) -> SagaStateMachine:
        """Make a definition (its name and version) known, so its sagas can be recovered."""
        if id(machine) not in self._registered:
            machine.freeze("an Orchestrator")
            self._definitions[(machine.name, machine.version)] = machine
            self._registered.add(id(machine))
            for child in sub_sagas(machine.graph).values():  # recovered here too
                self.register(child)
        return machine

    def definition(self, record: SagaRecord) -> SagaStateMachine:
        """The registered definition a saga ran under, or a `SagaError` naming both versions."""
        machine = self._definitions.get((record.name, record.version))
        if machine is None:
            known = [v for (n, v) in self._definitions if n == record.name]
            raise SagaNotRegistered(
                f"saga {record.saga_id!r} ran under {record.name!r} version {record.version}, "
                f"which is not registered (registered: {', '.join(known) or 'none'}); register "
                "that definition (keep the old code beside the new) to finish it",
                saga_id=record.saga_id, state=record.state)
        return machine

    # -- running -----------------------------------------------------------------------

    async def run(
        self, machine: SagaStateMachine, data: Any = None, *,
        saga_id: str | None = None,
    ) -> SagaRecord:
        """Run a saga to its end (or until it waits for an event) and return its record.

        `saga_id` is the idempotency key: a saga that exists already is never run twice;
        its record is returned (finished) or it is resumed (unfinished).
        """
        with telemetry.saga_span(machine.name, saga_id) as span:  # telemetry
            record, created = await self._create(machine, data, saga_id, pending=False)
            telemetry.named(span, record.saga_id)
            if created:
                return await self._drive(SagaRun(machine, record))
            if record.is_terminal:
                return record
            return await self.resume(record.saga_id)

    async def start(
        self, machine: SagaStateMachine, data: Any = None, *,
        saga_id: str | None = None,
    ) -> SagaRecord:
        """Persist a new saga, pending, for a worker (`work`) or `recover` to run."""
        return (await self._create(machine, data, saga_id, pending=True))[0]

    async def _create(
        self, machine: SagaStateMachine, data: Any, saga_id: str | None,
        *, pending: bool,
    ) -> tuple[SagaRecord, bool]:
        """The new saga's record and True, or the existing one with that id and False."""
        self.register(machine)
        saga_id = uuid.uuid4().hex if saga_id is None else check_id(saga_id)
        if saga_id in self._active:
            return await asyncio.shield(self._active[saga_id][1]), False
        data = {} if data is None else data
        if machine.data_type is not None:  # typed data (statesaga.typed): checked, as JSON
            data = machine.data_type.dump(data, f"the data of saga {saga_id!r}", saga_id=saga_id)
        if not isinstance(data, Mapping):
            raise InvalidSagaData(f"the data of saga {saga_id!r} must be a JSON object (a "
                                  f"dict), not {type(data).__name__}", key="data",
                                  saga_id=saga_id)
        data_json = to_json(data, f"the data of saga {saga_id!r}", saga_id=saga_id,
                            root="data")
        graph = machine.graph
        if isinstance(self.clock, StoreClock):
            await self.clock.ready()
        now = self.clock.time()
        deadline = None if machine.deadline is None else now + machine.deadline
        worker = None if pending else self.owner
        transition, commit = kernel.record(
            graph, kernel.start(graph), saga_id=saga_id, revision=1,
            at=datetime.fromtimestamp(now, UTC), worker=worker, owner=worker,
            lease=self.lease, pending=pending,
            wake_at=kernel.due(graph, graph.initial, now, deadline))
        record = SagaRecord(
            saga_id=saga_id, name=machine.name, version=machine.version, state=commit.state,
            status=commit.status, data=from_json(data_json), results={}, error=None,
            history=(transition,), created_at=transition.at, updated_at=transition.at,
            revision=1, fence=1,
            deadline_at=None if deadline is None else datetime.fromtimestamp(deadline, UTC))
        messages = await self._enter_initial(machine, record)
        try:
            await self.store.create(
                record, data_json=data_json, owner=commit.owner, now=store_time(self.clock),
                lease=commit.lease, waiting=commit.waiting, messages=messages,
                wake_at=commit.wake_at)
        except SagaConflict:
            existing = await self.store.load(saga_id)
            if existing.name != machine.name or to_json(dict(existing.data), "") != data_json:
                raise IdempotencyConflict(
                    f"saga {saga_id!r} already exists as {existing.name!r} with other data: "
                    "a saga id is an idempotency key, so use a new id for a new saga",
                    saga_id=saga_id, state=existing.state) from None
            return existing, False
        telemetry.saga_started(machine.name)  # telemetry
        return record, True

    async def _enter_initial(self, machine: SagaStateMachine, record: SagaRecord) -> list[Any]:
        """Run the initial state's on_enter; what it publishes is written with the saga."""
        d = machine.graph.defs[machine.initial]
        if d.on_enter is None:
            return []
        ctx = SagaRun(machine, record).context(machine.initial)
        await hooks.call(d.on_enter, ctx)
        return list(ctx.outbox or ())

    async def resume(self, saga_id: str) -> SagaRecord:
        """Go on with an unfinished saga (e.g. after a crash); a finished one is returned as is."""
        if saga_id in self._active:
            return await asyncio.shield(self._active[saga_id][1])
        record = await self.store.load(saga_id)
        if record.is_terminal:
            return record
        run = await self._take(record)
        return await self._drive(run, resumed=True)

    async def _take(self, record: SagaRecord) -> SagaRun:
        """Lease one saga to this orchestrator, or `SagaConflict` if a live worker holds it."""
        self._parked.pop(record.saga_id, None)  # whatever happens next, that copy goes stale
        machine = self.definition(record)
        claimed = await self.store.claim(self.owner, now=store_time(self.clock),
                                         lease=self.lease, limit=1, saga_id=record.saga_id)
        if not claimed:
            raise LeaseHeld(
                f"saga {record.saga_id!r} is being run by another worker (its lease is live): "
                "wait for it, or for its lease to expire if that worker died",
                saga_id=record.saga_id, state=record.state)
        return SagaRun(machine, claimed[0])

    async def _revert(self, record: SagaRecord) -> SagaRecord:
        """Undo a completed saga along its mirror (a parent compensating its sub-saga)."""
        run = SagaRun(self.definition(record), record)
        await self._runner.fire(run, Trigger.REVERT,
                                error="undone: the saga it is a step of is compensating")
        return await self._drive(run)

    async def _drive(self, run: SagaRun, *, resumed: bool = False) -> SagaRecord:
        done: asyncio.Future[SagaRecord] = asyncio.get_running_loop().create_future()
        self._active[run.saga_id] = (run, done)
        current = CURRENT.set(self)  # the sub-sagas of its steps run here
        task = asyncio.current_task()
        if task is not None:
            self._tasks[run.saga_id] = task
        self._ensure_heartbeat()
        try:
            with telemetry.saga_span(run.definition.name, run.saga_id):  # telemetry
                await self._runner.drive(run, resumed=resumed)
                while ((run.queued or resumed) and not self._runner.stopping
                       and (kernel.waits(run.graph, run.pos) or run.state in TERMINALS)):
                    resumed = False  # outside events that came meanwhile (a worker's claim)
                    if not await orchestrator_events.apply_queued(self, run):
                        break
                    await self._runner.drive(run)
            if run.state in TERMINALS:
                pass
            elif kernel.waits(run.graph, run.pos):
                self._park(run)
            else:
                await self.store.release(self.owner, [run.saga_id])  # a worker stopping
        except asyncio.CancelledError as exc:
            if not run.lost:
                raise
            error = self._lost(run)  # its lease was taken: this process stops, writes nothing
            done.set_exception(error)
            done.exception()
            raise error from exc
        except BaseException as exc:
            if not run.lost:
                with contextlib.suppress(Exception):  # a live lease is never left behind
                    await self.store.release(self.owner, [run.saga_id])
            done.set_exception(exc)
            done.exception()  # retrieved: a waiter may not exist
            raise
        finally:
            CURRENT.reset(current)
            del self._active[run.saga_id]
            self._tasks.pop(run.saga_id, None)
        record = run.record()
        done.set_result(record)
        return record

    def _park(self, run: SagaRun) -> None:
        """Keep a saga that waits for an event, so that the event costs only its commit."""
        self._parked[run.saga_id] = run
        self._parked.move_to_end(run.saga_id)
        while len(self._parked) > PARKED:
            self._parked.popitem(last=False)

    def _ensure_heartbeat(self) -> None:
        """Renew the leases of the sagas in flight every lease/3 s, while there are any."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().call_later(self.lease / 3, self._beat)

    def _beat(self) -> None:
        self._heartbeat = None
        if self._active:
            ids = list(self._active)
            task = asyncio.get_running_loop().create_task(self._renew(ids))
            self._beats.add(task)
            task.add_done_callback(self._beats.discard)
            self._ensure_heartbeat()

    async def _renew(self, ids: list[str]) -> None:
        """Renew the leases; act on what the store says of each saga: taken by another
        worker (stop it at once), an abort asked for, outside events queued."""
        try:
            signals = await self.store.renew(self.owner, ids, now=store_time(self.clock),
                                             lease=self.lease)
        except Exception as exc:  # a store hiccup: the next beat or commit renews the leases
            _log.warning("saga.lease_renewal_failed", error=describe(exc))
            return
        for saga_id, said in signals.items():
            active = self._active.get(saga_id)
            if active is None:
                continue
            run, task = active[0], self._tasks.get(saga_id)
            if said.lost and not run.lost:
                run.lost = True
                if task is not None:
                    task.cancel()
            elif said.abort is not None and run.abort is None:
                run.abort = said.abort
                if run.interruptible and task is not None:
                    task.cancel()
            run.queued = max(run.queued, said.events)

    def _lost(self, run: SagaRun) -> LeaseHeld:
        """A saga whose lease another worker took while this process ran it."""
        _log.warning("saga.lease_lost", saga_id=run.saga_id, state=run.state)
        return LeaseHeld(
            f"saga {run.saga_id!r} was taken over by another worker while this one ran it in "
            f"{run.state} (its lease had lapsed: a paused or overloaded process); this one "
            "stopped there and wrote nothing more: the saga goes on there",
            saga_id=run.saga_id, state=run.state)

    # -- outside events ----------------------------------------------------------------

    async def send(self, saga_id: str, event: str | Event,
                   payload: Mapping[str, Any] | None = None, *,
                   message_id: str | None = None) -> SagaRecord:
        """Deliver an outside event to a saga; it runs on until it waits or ends.

        `event` is a name (with `payload`) or an `Event`. A saga waiting here or in the store
        takes it at once; one another worker runs right now gets it queued durably, applied
        in order when it next waits (send waits for that). Idempotent by `message_id`: an
        event consumed before changes nothing. An event with no transition from the saga's
        state is recorded in its history as ignored; a failure event's `payload["reason"]`
        becomes the saga's error.
        """
        return await orchestrator_events.send(self, saga_id, event, payload,
                                              message_id=message_id)

    # -- operating ---------------------------------------------------------------------

    async def abort(self, saga_id: str, reason: str | None = None) -> SagaRecord:
        """Compensate a saga now; a step in flight is cancelled and compensated too."""
        reason = reason or "aborted by request"
        active = self._active.get(saga_id)
        if active is not None:
            run, done = active
            run.abort = run.abort or reason
            task = self._tasks.get(saga_id)
            if run.interruptible and task is not None:
                task.cancel()
            return await asyncio.shield(done)
        record = await self.store.load(saga_id)
        if record.is_terminal:
            hint = (" a compensation failed: fix it, then `retry`" if record.is_stuck
                    else " nothing to abort")
            raise SagaError(f"saga {saga_id!r} is already {record.status.value}:{hint}",
                            saga_id=saga_id, state=record.state)
        try:
            run = await self._take(record)
        except SagaConflict:
            await self.store.request_abort(saga_id, reason)
            _log.info("saga.abort_requested", saga_id=saga_id, reason=reason)
            return await self.store.load(saga_id)
        run.abort = reason
        return await self._drive(run)

    async def retry(self, saga_id: str, reason: str | None = None) -> SagaRecord:
        """Run the failed compensation of a stuck saga again (after its cause was fixed)."""
        record = await self.store.load(saga_id)
        if not record.is_stuck:
            raise SagaError(f"saga {saga_id!r} is {record.status.value}, not stuck: only a "
                            "failed saga can be retried", saga_id=saga_id, state=record.state)
        run = await self._take(record)
        await self._runner.fire(run, Trigger.RETRY, reason=reason or "retried by request")
        return await self._drive(run)

    async def get(self, saga_id: str) -> SagaRecord:
        """The saga's record; `SagaNotFound` if there is none."""
        return await self.store.load(saga_id)

    async def list(
        self, *, status: SagaStatus | None = None, name: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[SagaSummary]:
        """Sagas, newest first, filtered by status and definition name: summaries, never
        their history (`get` loads one saga whole; `query` pages with every filter)."""
        return await list_summaries(reader(self.store), SagaQuery(status=status, name=name),
                                    limit)

    async def query(self, query: SagaQuery) -> SagaPage:
        """One page of sagas matching `query`, newest first; `page.next` continues it."""
        return await reader(self.store).query_sagas(query)

    # -- many sagas ----------------------------------------------------------------------

    async def recover(
        self, *, concurrency: int = 64, batch: int = 500,
        progress: Callable[[int], None] | None = None,
    ) -> RecoveryReport:
        """Finish every unfinished saga of a registered definition; report the others (of
        other versions, and any one that could not go on: the rest still do)."""
        return await orchestrator_many.recover(self, concurrency=concurrency, batch=batch,
                                               progress=progress)

    async def work(
        self, *, concurrency: int = 16, poll: float = 0.5, stop: asyncio.Event | None = None,
    ) -> int:
        """Claim and run sagas until `stop` is set; returns how many it drove.

        Sagas are leased, so any number of workers can share one store. On `stop`, each
        saga in flight finishes its current step, then its lease is released.
        """
        return await orchestrator_many.work(self, concurrency=concurrency, poll=poll,
                                            stop=stop)
