"""`InMemoryBus`: the `EventBus` in one process, for tests and single-process runs.

Each group has one queue and one consumer task, which hands each event to one of the group's
subscribers for its type (round robin), one event at a time. A handler that raises gets the
event again at the back of the queue (like a RabbitMQ quorum queue), so a failing event never
blocks the ones behind it; after `max_deliveries` failed deliveries it goes to `dead_letters`.
Events travel as JSON, as over a broker: a handler gets its own copy, and a payload that is not
JSON fails at `publish`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import attrs

from .events import Event, Handler, call_handler
from .exceptions import BusError, UndeliverableEvent, describe
from .logs import logger as _log


@attrs.define
class _Delivery:
    event: Event
    failures: int = 0


@attrs.define
class _Group:
    name: str
    queue: deque[_Delivery] = attrs.field(factory=deque)
    ready: asyncio.Event = attrs.field(factory=asyncio.Event)
    handlers: dict[str, list[Handler]] = attrs.field(factory=dict)
    turns: dict[str, int] = attrs.field(factory=dict)
    task: asyncio.Task[None] | None = None

    def next_handler(self, event_type: str) -> Handler:
        """The subscriber whose turn it is for `event_type` (round robin)."""
        handlers = self.handlers[event_type]
        turn = self.turns.get(event_type, 0)
        self.turns[event_type] = turn + 1
        return handlers[turn % len(handlers)]


class InMemoryBus:
    """Delivers events at least once, in process; `dead_letters` holds (event, error) pairs."""

    def __init__(self, *, max_deliveries: int = 5) -> None:
        if max_deliveries < 1:
            raise BusError(f"max_deliveries must be at least 1, got {max_deliveries}")
        self.max_deliveries = max_deliveries
        self.dead_letters: list[tuple[Event, str]] = []
        self._groups: dict[str, _Group] = {}
        self._pending = 0  # events queued or being handled, across groups
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    async def publish(self, event: Event) -> None:
        """Queue `event` for every group subscribed to its type (none: it is dropped)."""
        if self._closed:
            raise BusError(f"cannot publish {event.type!r}: the bus is closed")
        text = event.to_json()
        for group in self._groups.values():
            if event.type in group.handlers:
                self._enqueue(group, _Delivery(Event.from_json(text)))

    async def subscribe(self, event_type: str, handler: Handler, *, group: str = "default"
                        ) -> None:
        """Add `handler` to `group` for `event_type` events; starts the group's consumer."""
        if self._closed:
            raise BusError(f"cannot subscribe to {event_type!r}: the bus is closed")
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _Group(group)
            state.task = asyncio.create_task(self._consume(state), name=f"bus:{group}")
        state.handlers.setdefault(event_type, []).append(handler)

    async def drain(self) -> None:
        """Wait until every queue is empty and no handler runs (redeliveries included)."""
        await self._idle.wait()

    async def close(self) -> None:
        """Stop the consumers; queued events are dropped (an in-memory bus keeps nothing)."""
        self._closed = True
        tasks = [g.task for g in self._groups.values() if g.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._pending = 0
        self._idle.set()

    def _enqueue(self, group: _Group, delivery: _Delivery) -> None:
        group.queue.append(delivery)
        group.ready.set()
        self._pending += 1
        self._idle.clear()

    def _done(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    async def _consume(self, group: _Group) -> None:
        while True:
            await group.ready.wait()
            delivery = group.queue.popleft()
            if not group.queue:
                group.ready.clear()
            try:
                await self._deliver(group, delivery)
            finally:
                self._done()

    async def _deliver(self, group: _Group, delivery: _Delivery) -> None:
        event = delivery.event
        try:
            await call_handler(group.next_handler(event.type), event)
        except Exception as exc:
            delivery.failures += 1
            error = describe(exc)
            final = isinstance(exc, UndeliverableEvent)  # it can never reach a saga
            if delivery.failures < self.max_deliveries and not final:
                _log.warning("bus.redelivery", message_id=event.message_id, type=event.type,
                             group=group.name, deliveries=delivery.failures, error=error)
                self._enqueue(group, delivery)
                return
            self.dead_letters.append((event, error))
            _log.error("bus.dead_letter", message_id=event.message_id, type=event.type,
                       group=group.name, deliveries=delivery.failures, error=error)

