"""The `SagaStore` protocol: what the orchestrator needs from a saga log, and nothing more."""

from __future__ import annotations

import asyncio
import builtins
import json
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import attrs

from ..events import Event
from ..records import SagaRecord, SagaStatus, Transition

_encode = json.JSONEncoder(default=str, separators=(",", ":")).encode


def message_json(message: Any) -> str:
    """An outbox message (an attrs record such as `Event`, or a dict) as JSON text."""
    if isinstance(message, Event):  # its fields as they are: no recursive attrs.asdict copy
        return _encode(message.as_dict())
    return _encode(attrs.asdict(message) if attrs.has(type(message)) else message)


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
class Commit:
    """One transition of one saga, written atomically (write-ahead, before the next action).

    `revision` is the saga's new revision; the store applies the commit only if the stored
    revision is `revision - 1` and raises `SagaConflict` otherwise. `result` is the JSON
    text of the result of `transition.step` when the transition records one. `messages`
    join the outbox in the same transaction. A `waiting` saga waits for an outside event and is
    claimable again only at `wake_at` (epoch seconds; None: never, until an event comes).
    `inbox` is the message id of the event this transition consumed: the store records it
    in the same transaction and raises `DuplicateMessage` if it was consumed before.
    """

    saga_id: str
    revision: int
    state: str
    status: SagaStatus
    error: str | None
    transition: Transition
    result: str | None = None
    owner: str | None = None
    lease_until: float | None = None
    messages: Sequence[Any] = ()
    waiting: bool = False
    wake_at: float | None = None
    inbox: str | None = None


@runtime_checkable
class SagaStore(Protocol):
    """A saga log. Every method that touches storage is a coroutine."""

    url: str

    async def create(
        self, record: SagaRecord, *, data_json: str, owner: str | None,
        lease_until: float | None, waiting: bool = False, messages: Sequence[Any] = (),
        wake_at: float | None = None,
    ) -> None:
        """Insert a new saga with its first transition; `SagaConflict` if the id is taken.

        `waiting` and `wake_at` as in `Commit`; `messages` join the outbox.
        """
        ...

    async def load(self, saga_id: str) -> SagaRecord:
        """The saga with its whole history; `SagaNotFound` if there is none."""
        ...

    async def commit(self, commit: Commit) -> str | None:
        """Apply one transition; returns the abort reason if an abort was requested meanwhile."""
        ...

    async def list(
        self, *, status: SagaStatus | None = None, name: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[SagaRecord]:
        """Sagas, newest first, with their history."""
        ...

    async def claim(
        self, owner: str, *, now: float, lease: float, limit: int,
        definitions: Sequence[tuple[str, str]] | None = None, saga_id: str | None = None,
    ) -> builtins.list[SagaRecord]:
        """Lease up to `limit` unfinished sagas that no live lease holds to `owner`.

        Only unfinished sagas of `definitions` ((name, version) pairs) that do not wait for
        an outside event; or just `saga_id`, whatever it waits for, stuck ones included.
        A claim bumps each saga's revision, so a worker whose lease expired cannot commit;
        it marks a pending saga running, but returns it as it was (pending: none of its
        steps can have started).
        """
        ...

    async def renew(self, owner: str, saga_ids: Sequence[str], until: float) -> None:
        """Extend `owner`'s leases on `saga_ids`."""
        ...

    async def release(self, owner: str, saga_ids: Sequence[str]) -> None:
        """Give up `owner`'s leases on `saga_ids` (they become claimable at once)."""
        ...

    async def request_abort(self, saga_id: str, reason: str) -> None:
        """Ask whoever runs the saga to abort it at its next transition."""
        ...

    async def close(self) -> None: ...

    # -- the transactional outbox and inbox, for choreography --------------------------

    async def pending_messages(self, limit: int = 100) -> builtins.list[tuple[int, str]]:
        """Outbox messages not yet sent, oldest first: (id, JSON text)."""
        ...

    async def mark_sent(self, ids: Sequence[int]) -> None:
        """Mark outbox messages sent (after the bus confirmed them)."""
        ...

    async def participant_state(self, participant: str, key: str) -> dict[str, Any] | None:
        """A participant's state for one saga (None before its first message)."""
        ...

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        """Store a participant's new state, its inbox entry and its replies in one
        transaction; False (and nothing written) if `message_id` was applied before."""
        ...
