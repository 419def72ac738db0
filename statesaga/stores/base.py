"""The store protocol, split by role: the saga log, leases, the event queue, the outbox, and
participants' state. `SagaStore` is all of them; every store implements every member."""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

import attrs

from ..clock import Clock, SystemClock
from ..codec import check_id, from_json, storable_text
from ..events import Event
from ..exceptions import InvalidSagaData
from ..records import SagaRecord, SagaStatus, Transition

_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode
S = TypeVar("S", bound="Opened")


def message_json(message: Any) -> str:
    """An outbox message (an attrs record such as `Event`, or a dict) as JSON text."""
    if isinstance(message, Event):  # its fields as they are: no recursive attrs.asdict copy
        return _encode(message.as_dict())
    return _encode(attrs.asdict(message) if attrs.has(type(message)) else message)


def store_time(clock: Clock) -> float | None:
    """The `now` to pass a store: None (the store's own clock, the server's on PostgreSQL)
    for the real clock, so that workers on machines with skewed clocks agree on leases;
    a fake clock's time as it is."""
    return None if isinstance(clock, SystemClock) else clock.time()


def storable(t: Transition) -> Transition:
    """`t` with its error and reason texts made storable (`codec.storable_text`)."""
    if t.error is None and t.reason is None:  # most transitions: nothing to check
        return t
    error, reason = storable_text(t.error), storable_text(t.reason)
    if error is t.error and reason is t.reason:
        return t
    return attrs.evolve(t, error=error, reason=reason)


def checked_event(message_id: str, type: str, payload_json: str) -> dict[str, Any]:
    """An outside event's payload as a dict, or `InvalidSagaData` (before anything is
    written) if it is not a JSON object or the id or type cannot be stored."""
    check_id(message_id, "message_id")
    check_id(type, "the event type")
    try:
        payload = from_json(payload_json)
    except ValueError as exc:
        payload = exc
    if not isinstance(payload, dict):
        raise InvalidSagaData(f"the payload of event {type!r} (message {message_id}) must be "
                              f"a JSON object, not {payload_json[:80]!r}", key="payload")
    return payload


class OutboxSignal:
    """Wakes a relay in this process as soon as a transaction put messages in the outbox,
    so it need not wait for its next poll (writers in other processes are still polled)."""

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    def arm(self) -> asyncio.Future[None]:
        """The future the next `notify` completes; arm before reading the outbox, so that a
        message written in between is not missed."""
        future = self._future
        if future is None or future.done() or future.get_loop() is not _loop():
            future = self._future = _loop().create_future()
        return future

    def notify(self) -> None:
        future, self._future = self._future, None
        if future is not None and not future.done() and not future.get_loop().is_closed():
            future.set_result(None)


def _loop() -> asyncio.AbstractEventLoop:
    return asyncio.get_running_loop()


@attrs.frozen
class Signals:
    """What a commit or a lease renewal tells the saga's driver: an abort someone requested
    (its reason), how many outside events wait in its queue, and (renew) that the lease is
    lost: claimed by another worker, released, or the saga gone. Stop driving it then."""

    abort: str | None = None
    events: int = 0
    lost: bool = False


@attrs.frozen
class QueuedEvent:
    """An outside event queued for a saga (`enqueue_event`), waiting to be consumed."""

    seq: int
    message_id: str
    type: str
    payload: dict[str, Any]
    received_at: datetime


@attrs.define  # not frozen: one is built per transition (frozen attrs costs 4x to build),
class Commit:  # and none is changed once built
    """One transition of one saga, written atomically (write-ahead, before the next action).

    `revision` is the saga's new revision; the store applies the commit only if the stored
    revision is `revision - 1` and raises `RevisionConflict` otherwise. `result` is the JSON
    text of the result of `transition.step` when the transition records one. `owner` keeps
    the lease for `lease` seconds from `now` (None: the store's clock; no `lease`: no
    lease). `messages` join the outbox in the same transaction. A `waiting` saga waits for
    an outside event and is claimable again only at `wake_at` (epoch seconds; None: never,
    until an event comes). `inbox` is the message id of the event this transition consumed:
    the store records it in the same transaction and raises `DuplicateMessage` if it was
    consumed before. `consumed` is the `seq` of that event in the saga's queue: it is
    deleted in the same transaction.
    """

    saga_id: str
    revision: int
    state: str
    status: SagaStatus
    error: str | None
    transition: Transition
    result: str | None = None
    owner: str | None = None
    now: float | None = None
    lease: float | None = None
    messages: Sequence[Any] = ()
    waiting: bool = False
    wake_at: float | None = None
    inbox: str | None = None
    consumed: int | None = None


@runtime_checkable
class SagaLog(Protocol):
    """The saga log: sagas, each with its whole history, written transition by transition."""

    async def create(
        self, record: SagaRecord, *, data_json: str, owner: str | None,
        now: float | None = None, lease: float | None = None, waiting: bool = False,
        messages: Sequence[Any] = (), wake_at: float | None = None,
    ) -> None:
        """Insert a new saga (fence 1) with its history; `SagaConflict` if the id is taken.

        `owner`, `now`, `lease`, `waiting` and `wake_at` as in `Commit`; `messages` join
        the outbox.
        """
        ...

    async def load(self, saga_id: str) -> SagaRecord:
        """The saga with its whole history; `SagaNotFound` if there is none."""
        ...

    async def commit(self, commit: Commit) -> Signals:
        """Apply one transition; the signals for the saga's driver (abort, queued events).

        `CommitOutcomeUnknown` if the connection failed while the commit was in flight:
        load the saga before doing anything else with it.
        """
        ...

    async def list(
        self, *, status: SagaStatus | None = None, name: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[SagaRecord]:
        """Sagas, newest first, with their history."""
        ...


@runtime_checkable
class Leases(Protocol):
    """Who drives which saga: leases taken, renewed, given up; abort requests for the driver.

    `now` None is the store's own clock (the server's on PostgreSQL); a float is used as
    given (a fake clock). Expiry is judged against the same `now`.
    """

    async def claim(
        self, owner: str, *, now: float | None, lease: float, limit: int,
        definitions: Sequence[tuple[str, str]] | None = None, saga_id: str | None = None,
    ) -> builtins.list[SagaRecord]:
        """Lease up to `limit` unfinished sagas that no live lease holds to `owner`.

        Only unfinished sagas of `definitions` ((name, version) pairs) that do not wait for
        an outside event, or whose `wake_at` came, or that have queued events; or just
        `saga_id`, whatever it waits for, stuck ones included. A claim bumps each saga's
        revision (a worker whose lease expired cannot commit) and its fence; it marks a
        pending saga running, but returns it as it was (pending: no step can have started).
        """
        ...

    async def renew(self, owner: str, saga_ids: Sequence[str], *, now: float | None,
                    lease: float) -> dict[str, Signals]:
        """Extend the leases `owner` still holds; per id its signals, `lost` for the others."""
        ...

    async def release(self, owner: str, saga_ids: Sequence[str]) -> None:
        """Give up `owner`'s leases on `saga_ids` (they become claimable at once)."""
        ...

    async def request_abort(self, saga_id: str, reason: str) -> SagaStatus:
        """Ask whoever drives the saga to abort it (`Signals.abort` of its next commit and
        renewal), unless it ended; returns the status found. `SagaNotFound` if none."""
        ...


@runtime_checkable
class EventQueue(Protocol):
    """Outside events queued durably for a saga, until a commit consumes them."""

    async def enqueue_event(self, saga_id: str, message_id: str, type: str, payload_json: str,
                            *, now: float | None = None) -> bool:
        """Queue an event in its own transaction; False (nothing written) if `message_id`
        was queued for the saga or consumed before. `SagaNotFound` if there is no saga."""
        ...

    async def queued_events(self, saga_id: str) -> builtins.list[QueuedEvent]:
        """The saga's queued events, in arrival order."""
        ...


@runtime_checkable
class Outbox(Protocol):
    """Messages written with transitions (the transactional outbox), for relays to send."""

    outbox_signal: OutboxSignal

    async def claim_messages(self, owner: str, *, now: float | None, lease: float,
                             limit: int) -> builtins.list[tuple[int, str]]:
        """Unsent messages no live claim of another owner holds, oldest first, claimed by
        `owner` for `lease` seconds: (id, JSON text). Two relays never get one message."""
        ...

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark outbox messages sent (after the bus confirmed them)."""
        ...


@runtime_checkable
class ParticipantStore(Protocol):
    """Choreography participants' state per saga, applied once per message."""

    async def participant_state(self, participant: str, key: str, *,
                                message_id: str | None = None) -> dict[str, Any] | None:
        """A participant's state for one saga (None before its first message);
        `DuplicateMessage` if `message_id` was applied by that participant before."""
        ...

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        """Store a participant's new state, its inbox entry and its replies in one
        transaction; False (and nothing written) if `message_id` was applied before."""
        ...


@runtime_checkable
class SagaStore(SagaLog, Leases, EventQueue, Outbox, ParticipantStore, Protocol):
    """A saga store: every role. An async context manager (`async with` opens and closes)."""

    url: str

    async def open(self) -> None:
        """Connect and create or migrate the schema now (otherwise: on first use)."""
        ...

    async def close(self) -> None:
        """Close connections; the next call opens them again."""
        ...

    def reopen(self) -> SagaStore:
        """The same store through a new handle, as a fresh process would open it."""
        ...

    async def __aenter__(self) -> SagaStore: ...

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


class Opened:
    """`async with store:` opens the store and closes it after."""

    async def open(self) -> None:
        raise NotImplementedError  # pragma: no cover - every store has its own

    async def close(self) -> None:
        raise NotImplementedError  # pragma: no cover - every store has its own

    async def __aenter__(self: S) -> S:
        await self.open()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()
