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
from typing import Any

from . import telemetry
from .context import StepContext
from .definition import SagaStateMachine
from .events import Event, EventBus
from .exceptions import (
    BusError,
    SagaConflict,
    UndeliverableEvent,
)
from .graph import RESERVED_EVENTS
from .logs import logger as _log
from .orchestrator import Orchestrator
from .records import SagaRecord
from .stores.base import store_time


def command(event_type: str,
            payload: Callable[[StepContext], Mapping[str, Any]] | None = None, *,
            confirmed_by: str | None = None, failed_by: str | None = None,
            ) -> Callable[[StepContext], None]:
    """A hook that publishes `event_type` for the saga (correlation id: the saga id).

    `payload(ctx)` builds the payload (default: the saga's data). The hook declares what it
    emits (`hook.emits`), so the contract check can read it without running it. As a
    compensation, `confirmed_by` makes its state wait for the participant's reply before
    the saga walks on; `failed_by` (or no reply within the state's timeout) leaves the saga
    stuck in `failed`, never `compensated`.
    """
    def publish(ctx: StepContext) -> None:
        body = dict(payload(ctx)) if payload is not None else _as_dict(ctx.data)
        ctx.publish(Event(event_type, body, correlation_id=ctx.saga_id))

    publish.emits = event_type  # type: ignore[attr-defined]
    publish.confirmed_by = confirmed_by  # type: ignore[attr-defined]
    publish.failed_by = failed_by  # type: ignore[attr-defined]
    publish.__qualname__ = f"command.{event_type}"
    return publish


def _as_dict(data: Any) -> dict[str, Any]:
    """The saga's data as the JSON object a command carries (typed data unstructured)."""
    if isinstance(data, Mapping):
        return dict(data)
    from .typed import CONVERTER

    return dict(CONVERTER.unstructure(data))


def waits_for(machine: SagaStateMachine) -> set[str]:
    """The event types the machine's states wait for (the ones to subscribe to)."""
    graph = machine.graph
    replies = {e for pair in graph.replies.values() for e in pair if e is not None}
    return replies | {t.event for t in graph.transitions
                      if t.source in graph.defs and t.event not in RESERVED_EVENTS
                      and graph.defs[t.source].step.action is None and t.event != "succeed"}


async def deliver(orch: Orchestrator, event: Event) -> SagaRecord:
    """Move the saga `event` is for (its correlation id) through `Orchestrator.send`.

    An event with no transition from the saga's state is recorded as ignored; a duplicate
    changes nothing. An event that cannot reach a saga raises `UndeliverableEvent` (the bus
    dead-letters it).
    """
    with telemetry.consume(event, f"event {event.type}"):  # telemetry: the sender's trace
        return await _deliver(orch, event)


async def _deliver(orch: Orchestrator, event: Event) -> SagaRecord:
    if not event.correlation_id:
        raise UndeliverableEvent(
            f"event {event.type!r} (message {event.message_id}) has no correlation_id: "
            "set it to the saga id")
    return await orch.send(event.correlation_id, event)


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
