"""Events for choreography: the `Event` record and the `EventBus` protocol."""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from . import telemetry
from .codec import from_json, to_json


def _new_id() -> str:
    return uuid.uuid4().hex


@attrs.frozen
class Event:
    """A message between saga participants; `correlation_id` is the saga id.

    `message_id` is unique per message (consumers deduplicate by it); `causation_id` is the
    message_id of the message that caused this one.
    """

    type: str
    payload: Mapping[str, Any] = attrs.field(factory=dict)
    correlation_id: str | None = None
    message_id: str = attrs.field(factory=_new_id)
    causation_id: str | None = None
    timestamp: float = attrs.field(factory=time.time)
    headers: Mapping[str, str] = attrs.field(factory=telemetry.headers)

    def as_dict(self) -> dict[str, Any]:
        """The event's fields as a dict (what `to_json` encodes)."""
        return {"type": self.type, "payload": self.payload,
                "correlation_id": self.correlation_id, "message_id": self.message_id,
                "causation_id": self.causation_id, "timestamp": self.timestamp,
                "headers": self.headers}

    def to_json(self) -> str:
        """The event as JSON text (a `SagaError` if its payload is not JSON)."""
        return to_json(self.as_dict(), f"the payload of event {self.type!r}")

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Parse an event; `ValueError` (or `TypeError`) if it is not a well-formed event."""
        raw = from_json(text.decode() if isinstance(text, bytes) else text)
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise ValueError(f"not an event: {str(raw)[:200]!r}")
        if not isinstance(raw.get("payload", {}), dict):
            raise ValueError(f"event {raw['type']!r} has a payload that is not a JSON object")
        headers = raw.get("headers", {})
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
            raise ValueError(f"event {raw['type']!r} has headers that are not text to text")
        return cls(**{name: raw[name] for name in _FIELDS if name in raw} | {"headers": headers})


_FIELDS = tuple(f.name for f in attrs.fields(Event))
Handler = Callable[[Event], Awaitable[object] | object]


@runtime_checkable
class EventBus(Protocol):
    """Publish events and deliver them to subscribers, at least once."""

    async def publish(self, event: Event) -> None:
        """Send `event`; returns once the bus has accepted it (persisted, for a broker)."""
        ...

    async def subscribe(self, event_type: str, handler: Handler, *, group: str = "default"
                        ) -> None:
        """Call `handler(event)` (sync or async) for each `event_type` event.

        Subscribers in one `group` share the events (each goes to one of them); every group
        gets every event. A handler that raises gets the event again later; after the bus's
        delivery limit it is dead-lettered.
        """
        ...

    async def close(self) -> None: ...


async def call_handler(handler: Handler, event: Event) -> None:
    """Call a sync or async handler with `event`, awaiting it if it is async."""
    result = handler(event)
    if inspect.isawaitable(result):
        await result
