"""`InMemoryStore`: the saga log in dicts, for tests and single-process runs."""

from __future__ import annotations

import builtins
import time
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from ..codec import from_json, storable_text, to_json
from ..exceptions import DuplicateMessage, RevisionConflict, SagaConflict, SagaNotFound
from ..records import SagaRecord, SagaStatus, Transition
from .base import (
    Commit,
    Opened,
    OutboxSignal,
    QueuedEvent,
    Signals,
    checked_event,
    message_json,
    storable,
)
from .reads import (
    UNFINISHED,
    DefinitionCount,
    OutboxStats,
    SagaPage,
    SagaQuery,
    SagaSummary,
    all_statuses,
    cursor_of,
    matches,
    parse_cursor,
)

_UNFINISHED = (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING)


@attrs.define
class _Row:
    record: SagaRecord
    data_json: str
    history: list[Transition]
    results: dict[str, str]
    revision: int
    state: str
    status: SagaStatus
    error: str | None
    updated_at: Any
    owner: str | None
    lease_until: float | None
    fence: int = 1
    abort: str | None = None
    waiting: bool = False
    wake_at: float | None = None
    events: list[QueuedEvent] = attrs.Factory(list)


@attrs.define
class _Message:
    id: int
    saga_id: str
    text: str
    sent: bool = False
    claimed_by: str | None = None
    claimed_until: float = 0.0


@attrs.define
class _Memory:
    """What every handle on one in-memory store shares (`reopen`)."""

    rows: dict[str, _Row] = attrs.Factory(dict)
    inbox: set[tuple[str, str]] = attrs.Factory(set)  # (consumer, message id)
    outbox: list[_Message] = attrs.Factory(list)
    participants: dict[tuple[str, str], str] = attrs.Factory(dict)
    seq: int = 0  # the last queued event's


def _now(now: float | None) -> float:
    return time.time() if now is None else now


_QUIET = Signals()  # nothing to tell: the common answer to a commit


class InMemoryStore(Opened):
    """Keeps sagas in memory, with the same semantics as the durable stores (JSON, revisions)."""

    url = "memory://"

    def __init__(self, *, _memory: _Memory | None = None) -> None:
        self._m = _memory if _memory is not None else _Memory()
        self._rows = self._m.rows
        self.outbox_signal = OutboxSignal()

    # -- the saga log --------------------------------------------------------------------

    async def create(
        self, record: SagaRecord, *, data_json: str, owner: str | None,
        now: float | None = None, lease: float | None = None, waiting: bool = False,
        messages: Sequence[Any] = (), wake_at: float | None = None,
    ) -> None:
        if record.saga_id in self._rows:
            raise SagaConflict(f"saga {record.saga_id!r} already exists", saga_id=record.saga_id)
        error = storable_text(record.error)
        self._rows[record.saga_id] = _Row(
            record=record, data_json=data_json, history=[storable(t) for t in record.history],
            results={}, revision=record.revision, state=record.state, status=record.status,
            error=error, updated_at=record.updated_at, owner=owner,
            lease_until=None if lease is None else _now(now) + lease, waiting=waiting,
            wake_at=wake_at)
        self._send(record.saga_id, messages)

    async def load(self, saga_id: str) -> SagaRecord:
        row = self._rows.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id, self.url)
        return self._record(row)

    def _record(self, row: _Row) -> SagaRecord:
        return attrs.evolve(
            row.record, state=row.state, status=row.status, error=row.error,
            data=from_json(row.data_json),
            results={k: from_json(v) for k, v in row.results.items()},
            history=tuple(row.history), revision=row.revision, updated_at=row.updated_at,
            fence=row.fence)

    async def commit(self, commit: Commit) -> Signals:
        row = self._rows.get(commit.saga_id)
        if row is None:
            raise SagaNotFound(commit.saga_id, self.url)
        if commit.inbox is not None and ("saga", commit.inbox) in self._m.inbox:
            raise DuplicateMessage(f"message {commit.inbox} was consumed before",
                                   saga_id=commit.saga_id)
        if row.revision != commit.revision - 1:
            raise RevisionConflict(
                f"saga {commit.saga_id!r} was changed by another writer (revision "
                f"{row.revision}, expected {commit.revision - 1}): reload it",
                saga_id=commit.saga_id, state=row.state)
        row.revision = commit.revision
        row.state = commit.state
        row.status = commit.status
        row.error = storable_text(commit.error)
        row.updated_at = commit.transition.at
        row.history.append(storable(commit.transition))
        if commit.result is not None and commit.transition.step is not None:
            row.results[commit.transition.step] = commit.result
        row.owner = commit.owner
        row.lease_until = None if commit.lease is None else _now(commit.now) + commit.lease
        row.waiting, row.wake_at = commit.waiting, commit.wake_at
        self._send(commit.saga_id, commit.messages)
        if commit.inbox is not None:
            self._m.inbox.add(("saga", commit.inbox))
        if commit.consumed is not None:
            row.events = [e for e in row.events if e.seq != commit.consumed]
        if row.abort is None and not row.events:
            return _QUIET
        return Signals(abort=row.abort, events=len(row.events))

    async def list(
        self, *, status: SagaStatus | None = None, name: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[SagaRecord]:
        rows = [r for r in reversed(self._rows.values())
                if (status is None or r.status is status) and (name is None or
                                                                r.record.name == name)]
        return [self._record(r) for r in rows[:limit]]

    # -- the read side (`reads.SagaReader`): no transitions, no data ------------------------

    def _summary(self, n: int, row: _Row) -> SagaSummary:
        r = row.record
        return SagaSummary(
            saga_id=r.saga_id, name=r.name, version=r.version, state=row.state,
            status=row.status, error=row.error, created_at=r.created_at,
            updated_at=row.updated_at, owner=row.owner, lease_until=row.lease_until,
            revision=row.revision, waiting=row.waiting, wake_at=row.wake_at,
            deadline_at=r.deadline_at, cursor=cursor_of(r.created_at, n))

    async def query_sagas(self, query: SagaQuery) -> SagaPage:
        after = None if query.after is None else parse_cursor(query.after)
        found = [(row.record.created_at, n, row) for n, row in enumerate(self._rows.values())
                 if matches(query, row.record.saga_id, row.record.name, row.record.version,
                            row.state, row.status, row.error, row.record.created_at)]
        found.sort(key=lambda item: (item[0], item[1]), reverse=True)
        if after is not None:
            found = [item for item in found if (item[0], item[1]) < after]
        sagas = tuple(self._summary(n, row) for _, n, row in found[:query.limit])
        return SagaPage(sagas, sagas[-1].cursor if len(found) > query.limit else None)

    async def saga_summary(self, saga_id: str) -> SagaSummary:
        for n, (key, row) in enumerate(self._rows.items()):
            if key == saga_id:
                return self._summary(n, row)
        raise SagaNotFound(saga_id, self.url)

    async def count_by_status(self, *, cap: int | None = None) -> dict[SagaStatus, int]:
        counts = all_statuses(Counter(row.status.value for row in self._rows.values()))
        return counts if cap is None else {s: min(n, cap + 1) for s, n in counts.items()}

    async def count_by_definition(
        self, statuses: Collection[SagaStatus] = UNFINISHED,
    ) -> builtins.list[DefinitionCount]:
        counts = Counter((row.record.name, row.record.version) for row in self._rows.values()
                         if row.status in statuses)
        return [DefinitionCount(name, version, n) for (name, version), n in sorted(counts.items())]

    async def leased(self, *, now: float | None = None, limit: int = 500
                     ) -> builtins.list[SagaSummary]:
        held = [self._summary(n, row) for n, row in enumerate(self._rows.values())
                if row.owner is not None and row.lease_until is not None
                and row.status not in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED)
                and (now is None or row.lease_until > now)]
        held.sort(key=lambda s: (s.owner or "", -(s.lease_until or 0.0), s.saga_id))
        return held[:limit]

    async def outbox_stats(self) -> OutboxStats:
        """The unsent messages; the oldest one's time is its event's `timestamp`, if it has one
        (this store keeps no write time beside a message)."""
        unsent = [m.text for m in self._m.outbox if not m.sent]
        oldest = None
        if unsent:
            stamp = from_json(unsent[0]).get("timestamp") if unsent[0].startswith("{") else None
            if isinstance(stamp, int | float):
                oldest = datetime.fromtimestamp(stamp, UTC)
        return OutboxStats(len(unsent), oldest)

    # -- leases --------------------------------------------------------------------------

    async def claim(
        self, owner: str, *, now: float | None, lease: float, limit: int,
        definitions: Sequence[tuple[str, str]] | None = None, saga_id: str | None = None,
    ) -> builtins.list[SagaRecord]:
        now = _now(now)
        wanted = None if definitions is None else set(definitions)
        rows = self._rows.values() if saga_id is None else [
            r for r in (self._rows.get(saga_id),) if r is not None]
        taken: builtins.list[SagaRecord] = []
        for row in rows:
            if len(taken) >= limit:
                break
            if saga_id is not None:  # one saga, by an operator: waiting or stuck is fine
                if row.status in (SagaStatus.COMPLETED, SagaStatus.COMPENSATED):
                    continue
            elif row.status not in _UNFINISHED or (row.waiting and not row.events and not (
                    row.wake_at is not None and row.wake_at <= now)) or (
                    wanted is not None and (row.record.name, row.record.version) not in wanted
                    ) or row.owner == owner:  # a batch claim leaves its own sagas alone
                continue
            if row.owner is not None and row.lease_until is not None and row.lease_until > now:
                continue
            row.owner, row.lease_until = owner, now + lease
            row.revision += 1  # a stale owner's next commit now conflicts
            row.fence += 1
            taken.append(self._record(row))
            if row.status is SagaStatus.PENDING:
                row.status = SagaStatus.RUNNING
        return taken

    async def renew(self, owner: str, saga_ids: Sequence[str], *, now: float | None,
                    lease: float) -> dict[str, Signals]:
        until = _now(now) + lease
        signals = {}
        for saga_id in saga_ids:
            row = self._rows.get(saga_id)
            if row is None or row.owner != owner:
                signals[saga_id] = Signals(lost=True)
                continue
            row.lease_until = until
            signals[saga_id] = Signals(abort=row.abort, events=len(row.events))
        return signals

    async def release(self, owner: str, saga_ids: Sequence[str]) -> None:
        for saga_id in saga_ids:
            row = self._rows.get(saga_id)
            if row is not None and row.owner == owner:
                row.owner = row.lease_until = None

    async def request_abort(self, saga_id: str, reason: str) -> SagaStatus:
        row = self._rows.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id, self.url)
        if not row.status.is_terminal:
            row.abort = storable_text(reason)
        return row.status

    # -- the event queue -----------------------------------------------------------------

    async def enqueue_event(self, saga_id: str, message_id: str, type: str, payload_json: str,
                            *, now: float | None = None) -> bool:
        payload = checked_event(message_id, type, payload_json)
        row = self._rows.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id, self.url)
        if ("saga", message_id) in self._m.inbox or any(
                e.message_id == message_id for e in row.events):
            return False
        self._m.seq += 1
        row.events.append(QueuedEvent(self._m.seq, message_id, type, payload,
                                      datetime.fromtimestamp(_now(now), UTC)))
        return True

    async def queued_events(self, saga_id: str) -> builtins.list[QueuedEvent]:
        row = self._rows.get(saga_id)
        return [] if row is None else list(row.events)

    # -- the outbox and participants (choreography) ----------------------------------------

    def _send(self, saga_id: str, messages: Sequence[Any]) -> None:
        outbox = self._m.outbox
        for m in messages:
            outbox.append(_Message(len(outbox) + 1, saga_id, message_json(m)))
        if messages:
            self.outbox_signal.notify()

    async def claim_messages(self, owner: str, *, now: float | None, lease: float,
                             limit: int) -> builtins.list[tuple[int, str]]:
        now = _now(now)
        taken: builtins.list[tuple[int, str]] = []
        for m in self._m.outbox:
            if len(taken) >= limit:
                break
            if not m.sent and (m.claimed_by in (None, owner) or m.claimed_until <= now):
                m.claimed_by, m.claimed_until = owner, now + lease
                taken.append((m.id, m.text))
        return taken

    async def mark_sent(self, ids: Sequence[int]) -> None:
        for i in ids:
            self._m.outbox[i - 1].sent = True

    async def participant_state(self, participant: str, key: str, *,
                                message_id: str | None = None) -> dict[str, Any] | None:
        if message_id is not None and (participant, message_id) in self._m.inbox:
            raise DuplicateMessage(f"message {message_id} was applied by {participant} before",
                                   saga_id=key)
        text = self._m.participants.get((participant, key))
        return None if text is None else dict(from_json(text))

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        """Apply a participant's handling of one message atomically; False if a duplicate."""
        if (participant, message_id) in self._m.inbox:
            return False
        text = to_json(state, f"{participant}'s state")  # refuse bad state before recording
        self._m.inbox.add((participant, message_id))
        self._m.participants[(participant, key)] = text
        self._send(key, messages)
        return True

    # -- the store itself ----------------------------------------------------------------

    def reopen(self) -> InMemoryStore:
        """Another handle on the same memory, as a fresh process would open a database."""
        return InMemoryStore(_memory=self._m)

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close: the sagas stay for as long as the object lives."""
