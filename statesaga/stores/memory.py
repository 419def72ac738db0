"""`InMemoryStore`: the saga log in a dict, for tests and single-process runs."""

from __future__ import annotations

import builtins
from collections import Counter
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from ..codec import from_json, to_json
from ..exceptions import DuplicateMessage, RevisionConflict, SagaConflict, SagaNotFound
from ..records import SagaRecord, SagaStatus, Transition
from .base import Commit, OutboxSignal, message_json
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
    abort: str | None = None
    waiting: bool = False
    wake_at: float | None = None


class InMemoryStore:
    """Keeps sagas in memory, with the same semantics as the durable stores (JSON, revisions)."""

    url = "memory://"

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._inbox: set[tuple[str, str]] = set()
        self._outbox: list[tuple[int, str, str, bool]] = []  # id, saga_id, message, sent
        self._participants: dict[tuple[str, str], str] = {}
        self.outbox_signal = OutboxSignal()

    async def create(
        self, record: SagaRecord, *, data_json: str, owner: str | None,
        lease_until: float | None, waiting: bool = False, messages: Sequence[Any] = (),
        wake_at: float | None = None,
    ) -> None:
        if record.saga_id in self._rows:
            raise SagaConflict(f"saga {record.saga_id!r} already exists", saga_id=record.saga_id)
        self._rows[record.saga_id] = _Row(
            record=record, data_json=data_json, history=list(record.history), results={},
            revision=record.revision, state=record.state, status=record.status,
            error=record.error, updated_at=record.updated_at, owner=owner,
            lease_until=lease_until, waiting=waiting, wake_at=wake_at)
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
            history=tuple(row.history), revision=row.revision, updated_at=row.updated_at)

    async def commit(self, commit: Commit) -> str | None:
        row = self._rows.get(commit.saga_id)
        if row is None:
            raise SagaNotFound(commit.saga_id, self.url)
        if commit.inbox is not None and ("saga", commit.inbox) in self._inbox:
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
        row.error = commit.error
        row.updated_at = commit.transition.at
        row.history.append(commit.transition)
        if commit.result is not None and commit.transition.step is not None:
            row.results[commit.transition.step] = commit.result
        row.owner = commit.owner
        row.lease_until = commit.lease_until
        row.waiting, row.wake_at = commit.waiting, commit.wake_at
        self._send(commit.saga_id, commit.messages)
        if commit.inbox is not None:
            self._inbox.add(("saga", commit.inbox))
        return row.abort

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
        unsent = [message for _, _, message, sent in self._outbox if not sent]
        oldest = None
        if unsent:
            stamp = from_json(unsent[0]).get("timestamp") if unsent[0].startswith("{") else None
            if isinstance(stamp, int | float):
                oldest = datetime.fromtimestamp(stamp, UTC)
        return OutboxStats(len(unsent), oldest)

    async def claim(
        self, owner: str, *, now: float, lease: float, limit: int,
        definitions: Sequence[tuple[str, str]] | None = None, saga_id: str | None = None,
    ) -> builtins.list[SagaRecord]:
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
            elif row.status not in _UNFINISHED or (row.waiting and not (
                    row.wake_at is not None and row.wake_at <= now)) or (
                    wanted is not None and (row.record.name, row.record.version) not in wanted):
                continue
            if row.owner is not None and row.lease_until is not None and row.lease_until > now:
                continue
            row.owner, row.lease_until = owner, now + lease
            row.revision += 1  # a stale owner's next commit now conflicts
            taken.append(self._record(row))
            if row.status is SagaStatus.PENDING:
                row.status = SagaStatus.RUNNING
        return taken

    async def renew(self, owner: str, saga_ids: Sequence[str], until: float) -> None:
        for saga_id in saga_ids:
            row = self._rows.get(saga_id)
            if row is not None and row.owner == owner:
                row.lease_until = until

    async def release(self, owner: str, saga_ids: Sequence[str]) -> None:
        for saga_id in saga_ids:
            row = self._rows.get(saga_id)
            if row is not None and row.owner == owner:
                row.owner = row.lease_until = None

    async def request_abort(self, saga_id: str, reason: str) -> None:
        row = self._rows.get(saga_id)
        if row is None:
            raise SagaNotFound(saga_id, self.url)
        row.abort = reason

    def _send(self, saga_id: str, messages: Sequence[Any]) -> None:
        for m in messages:
            self._outbox.append((len(self._outbox) + 1, saga_id, message_json(m), False))
        if messages:
            self.outbox_signal.notify()

    async def pending_messages(self, limit: int = 100) -> builtins.list[tuple[int, str]]:
        """Outbox messages not yet sent, oldest first: (id, JSON text)."""
        return [(i, m) for i, _, m, sent in self._outbox if not sent][:limit]

    async def mark_sent(self, ids: Sequence[int]) -> None:
        for i in ids:
            n, saga_id, message, _ = self._outbox[i - 1]
            self._outbox[i - 1] = (n, saga_id, message, True)

    async def participant_state(self, participant: str, key: str) -> dict[str, Any] | None:
        """A participant's state for one saga (None before its first message)."""
        text = self._participants.get((participant, key))
        return None if text is None else dict(from_json(text))

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        """Apply a participant's handling of one message atomically; False if a duplicate."""
        if (participant, message_id) in self._inbox:
            return False
        text = to_json(state, f"{participant}'s state")  # refuse bad state before recording
        self._inbox.add((participant, message_id))
        self._participants[(participant, key)] = text
        self._send(key, messages)
        return True

    async def close(self) -> None:
        """Nothing to close: the sagas stay for as long as the object lives."""
