"""Choreographed sagas: their machines move on events from a bus; their messages leave by outbox.

No coordinator calls the services: a state's `on_enter` publishes a command, a participant
handles it and replies with an event carrying the saga id, and that event moves the saga.
Every message a transition publishes is written to the outbox in the same store
transaction as the saga's new state; `relay` sends it and marks it sent. Every event a
saga consumes is recorded in the inbox in that transaction too, so a redelivered event is
skipped.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from .context import StepContext
from .definition import SagaStateMachine
from .events import Event, EventBus
from .exceptions import (
    BusError,
    DuplicateMessage,
    SagaConflict,
    SagaNotFound,
    UndeliverableEvent,
)
from .graph import RESERVED_EVENTS
from .orchestrator import Orchestrator
from .records import TERMINALS, SagaRecord, Transition
from .saga_run import SagaRun
from .stores.base import Commit, store_time

_log = structlog.get_logger("statesaga")


def command(event_type: str,
            payload: Callable[[StepContext], Mapping[str, Any]] | None = None
            ) -> Callable[[StepContext], None]:
    """A hook that publishes `event_type` for the saga (correlation id: the saga id).

    `payload(ctx)` builds the payload (default: the saga's data). The hook declares what it
    emits (`hook.emits`), so the contract check can read it without running it.
    """
    def publish(ctx: StepContext) -> None:
        body = dict(payload(ctx)) if payload is not None else dict(ctx.data)
        ctx.publish(Event(event_type, body, correlation_id=ctx.saga_id))

    publish.emits = event_type  # type: ignore[attr-defined]
    publish.__qualname__ = f"command.{event_type}"
    return publish


def waits_for(machine: SagaStateMachine) -> set[str]:
    """The event types the machine's states wait for (the ones to subscribe to)."""
    graph = machine.graph
    return {t.event for t in graph.transitions
            if t.source in graph.defs and t.event not in RESERVED_EVENTS
            and graph.defs[t.source].step.action is None and t.event != "succeed"}


async def deliver(orch: Orchestrator, event: Event) -> SagaRecord | None:
    """Move the saga `event` is for; None if the event was delivered before (a duplicate).

    An event with no transition from the saga's state is recorded as ignored. An event
    that cannot reach a saga raises `UndeliverableEvent` (the bus dead-letters it).
    """
    if not event.correlation_id:
        raise UndeliverableEvent(
            f"event {event.type!r} (message {event.message_id}) has no correlation_id: "
            "set it to the saga id")
    active = orch._active.get(event.correlation_id)
    if active is not None:  # this process drives it right now: let that finish first
        await asyncio.shield(active[1])
    parked = orch._parked.pop(event.correlation_id, None)
    if parked is not None:  # no claim, no load: the commit's revision check guards it
        try:
            fired = await _apply(orch, parked, event)
        except DuplicateMessage:
            return None
        except SagaConflict:
            pass  # it moved elsewhere meanwhile: load it afresh below
        else:
            return await orch._drive(parked, resumed=False)
    claimed = await orch.store.claim(orch.owner, now=store_time(orch.clock), lease=orch.lease,
                                     limit=1, saga_id=event.correlation_id)
    try:
        if not claimed:  # finished, unknown, or run by another worker right now
            try:
                record = await orch.store.load(event.correlation_id)
            except SagaNotFound:
                raise UndeliverableEvent(
                    f"event {event.type!r} (message {event.message_id}) is for saga "
                    f"{event.correlation_id!r}, which does not exist",
                    saga_id=event.correlation_id) from None
            if not record.is_terminal:
                raise SagaConflict(f"saga {record.saga_id!r} is being run by another worker",
                                   saga_id=record.saga_id, state=record.state)
            await _ignore(orch, SagaRun(orch.definition(record), record), event)
            return await orch.store.load(record.saga_id)
        run = SagaRun(orch.definition(claimed[0]), claimed[0])
        try:
            fired = await _apply(orch, run, event)
        except BaseException:
            await orch.store.release(orch.owner, [run.saga_id])
            raise
    except DuplicateMessage:
        _log.info("saga.duplicate_event", saga_id=event.correlation_id,
                  message_id=event.message_id)
        return None
    # unchanged state: a step or compensation in it may have been cut off by a dead process
    return await orch._drive(run, resumed=not fired)


async def _apply(orch: Orchestrator, run: SagaRun, event: Event) -> bool:
    """Fire `event` on the saga, or record it as ignored; True if it moved the saga."""
    fired = await orch._runner.fire(run, event.type, payload=event, inbox=event.message_id)
    if not fired:
        await _ignore(orch, run, event)
    return fired


async def _ignore(orch: Orchestrator, run: SagaRun, event: Event) -> None:
    """Record an event the saga has no transition for: in the history, state unchanged."""
    waiting = orch._runner._waits(run.definition.graph, run.state)
    owner = None if waiting or run.state in TERMINALS else orch.owner  # keep only to drive on
    at = datetime.fromtimestamp(orch.clock.time(), UTC)
    reason = f"ignored: no transition on {event.type!r} from {run.state}"
    transition = Transition(at, run.state, run.state, event.type, reason=reason,
                            worker=orch.owner)
    run.history.append(transition)
    run.revision += 1
    await orch.store.commit(Commit(
        saga_id=run.saga_id, revision=run.revision, state=run.state,
        status=run.record().status, error=run.error, transition=transition,
        owner=owner, now=store_time(orch.clock), lease=None if owner is None else orch.lease,
        waiting=waiting, wake_at=orch._runner.due(run), inbox=event.message_id))
    _log.info("saga.event_ignored", saga_id=run.saga_id, state=run.state, trigger=event.type,
              message_id=event.message_id)


class Choreography:
    """Connects an orchestrator's sagas to a bus: events in (`listen`), messages out (`relay`)."""

    def __init__(self, orchestrator: Orchestrator, bus: EventBus, *, group: str = "sagas"
                 ) -> None:
        self.orchestrator = orchestrator
        self.bus = bus
        self.group = group

    async def start(self, machine: SagaStateMachine, data: Mapping[str, Any] | None = None,
                    *, saga_id: str | None = None) -> SagaRecord:
        """Start a saga: its initial state's commands are written with it, for the relay."""
        return await self.orchestrator.run(machine, data, saga_id=saga_id)

    async def listen(self, machines: Sequence[SagaStateMachine]) -> None:
        """Subscribe to every event the machines wait for."""
        types: set[str] = set()
        for machine in machines:
            self.orchestrator.register(machine)
            types |= waits_for(machine)
        for event_type in sorted(types):
            await self.bus.subscribe(event_type, self._handle, group=self.group)

    async def _handle(self, event: Event) -> None:
        for _ in range(50):
            try:
                await deliver(self.orchestrator, event)
                return
            except SagaConflict:  # another consumer moves this saga right now: wait a beat
                await asyncio.sleep(0.01)
        raise SagaConflict(f"saga {event.correlation_id!r} stayed busy; the bus redelivers",
                           saga_id=event.correlation_id)

    async def serve(self, machines: Sequence[SagaStateMachine], stop: asyncio.Event, *,
                    poll: float = 0.05) -> None:
        """Until `stop`: deliver the machines' events, relay the outbox, fire due timers."""
        await self.listen(machines)
        await asyncio.gather(self.relay(poll=poll, stop=stop),
                             self.orchestrator.work(poll=poll, stop=stop))

    async def relay(self, *, poll: float = 0.05, stop: asyncio.Event | None = None,
                    batch: int = 200) -> int:
        """Send the outbox's messages to the bus, oldest first; runs until `stop` is set.

        A message is marked sent only after the bus confirmed it, so a crash in between
        sends it again (consumers drop the duplicate by message id). Messages are claimed
        (for the orchestrator's lease), so relays running at once never send one twice.
        Messages written in this process wake the relay at once; other processes' are found
        by polling every `poll` s.
        """
        orch = self.orchestrator
        store, owner = orch.store, f"{orch.owner}:relay:{uuid.uuid4().hex[:8]}"
        sent = 0
        while stop is None or not stop.is_set():
            written = store.outbox_signal.arm()  # before the read: a later message wakes us
            pending = await store.claim_messages(owner, now=store_time(orch.clock),
                                                 lease=orch.lease, limit=batch)
            if pending:
                try:
                    await asyncio.gather(*(self.bus.publish(Event.from_json(text))
                                           for _, text in pending))
                except BusError:  # the broker is away: the messages wait in the outbox
                    _log.warning("relay.publish_failed", pending=len(pending), exc_info=True)
                    await asyncio.sleep(max(poll, 1.0))
                    continue
                await store.mark_sent([i for i, _ in pending])
                sent += len(pending)
                continue
            if stop is None:
                return sent
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait((written, stopping), timeout=poll,
                               return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        return sent
