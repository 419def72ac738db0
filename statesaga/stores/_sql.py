"""What the SQLite and PostgreSQL stores share: their SQL, and rows in and out.

Statements are written once, with `$n` parameters and `{name}` placeholders that a `Dialect`
fills in (types, the schema prefix, JSON list functions); SQLite gets `?n` parameters.
A corrupt row: `load` (and a claim of that one saga) raise `StoreError`; `list` and batch
claims log it (`saga.corrupt_row`) and serve the other sagas.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, NoReturn, Protocol

import attrs

from ..codec import from_json, storable_text
from ..exceptions import (
    DuplicateMessage,
    RevisionConflict,
    SagaConflict,
    SagaNotFound,
    StoreError,
)
from ..logs import logger as _log
from ..records import SagaRecord, SagaStatus, Transition
from ._schema import MIGRATIONS, SCHEMA_VERSION
from .base import Commit, QueuedEvent, Signals, message_json

UNFINISHED = "status IN ('pending', 'running', 'compensating')"
TERMINAL = "status IN ('completed', 'compensated', 'failed')"


def now_sql(n: int) -> str:
    """Parameter `$n` (epoch seconds), or the database's clock when it is NULL."""
    return f"coalesce(CAST(${n} AS {{float}}), {{clock}})"


QUEUED = "EXISTS (SELECT 1 FROM {s}events e WHERE e.saga_id = {s}sagas.saga_id)"
# A waiting saga is claimable once its `wake_at` has come ($1: now), or an event is queued.
CLAIMABLE = f"{UNFINISHED} AND (NOT waiting OR wake_at <= {now_sql(1)} OR {QUEUED})"
EVENTS = "(SELECT count(*) FROM {s}events e WHERE e.saga_id = {s}sagas.saga_id)"

SAGA = ("saga_id, name, version, state, status, data, error, revision, created_at, updated_at, "
        "deadline_at, fence")
HISTORY = ("saga_id, at, source, dest, event, step, attempt, error, duration, reason, worker, "
           "result")
INSERT_SAGA = (
    "INSERT INTO {s}sagas (saga_id, name, version, state, status, data, error, revision, "
    "created_at, updated_at, deadline_at, owner, lease_until, waiting, wake_at, fence) VALUES "
    f"($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 + {now_sql(16)}, $14, $15, 1) "
    "ON CONFLICT (saga_id) DO NOTHING")
SET_SAGA = ("revision = $2, state = $3, status = $4, error = $5, updated_at = $6, owner = $7, "
            f"lease_until = $8 + {now_sql(11)}, waiting = $9, wake_at = $10")
UPDATE_SAGA = (f"UPDATE {{s}}sagas SET {SET_SAGA} WHERE saga_id = $1 AND revision = $2 - 1 "
               f"RETURNING abort_reason, {EVENTS} AS events")
INSERT_TRANSITION = (
    "INSERT INTO {s}transitions (saga_id, seq, at, source, dest, event, step, attempt, error, "
    "duration, reason, worker, result) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
    "$13)")
INSERT_MESSAGE = "INSERT INTO {s}outbox (saga_id, message, created_at) VALUES ($1, $2, $3)"
SELECT_SAGA = f"SELECT {SAGA} FROM {{s}}sagas WHERE saga_id = $1"
INSERT_INBOX = ("INSERT INTO {s}inbox (consumer, message_id, saga_id, consumed_at) "
                "VALUES ('saga', $2, $1, $3)")
SELECT_REVISION = ("SELECT revision, state, EXISTS (SELECT 1 FROM {s}inbox WHERE consumer = "
                   "'saga' AND message_id = $2) AS seen FROM {s}sagas WHERE saga_id = $1")
SELECT_HISTORY = f"SELECT {HISTORY} FROM {{s}}transitions WHERE saga_id = $1 ORDER BY seq"
SELECT_HISTORIES = (f"SELECT {HISTORY} FROM {{s}}transitions WHERE saga_id IN "
                    "(SELECT value FROM {each}($1)) ORDER BY saga_id, seq")
CLAIM = ("UPDATE {s}sagas SET owner = $1, lease_until = $2, revision = revision + 1, "
         "fence = fence + 1, status = CASE status WHEN 'pending' THEN 'running' ELSE status END "
         "WHERE saga_id IN (SELECT value FROM {each}($3))")
RENEW = (f"UPDATE {{s}}sagas SET lease_until = {now_sql(3)} + $4 WHERE owner = $1 AND saga_id IN "
         f"(SELECT value FROM {{each}}($2)) RETURNING saga_id, abort_reason, {EVENTS} AS events")
RELEASE = ("UPDATE {s}sagas SET owner = NULL, lease_until = NULL WHERE owner = $1 AND saga_id IN "
           "(SELECT value FROM {each}($2))")
REQUEST_ABORT = (f"UPDATE {{s}}sagas SET abort_reason = CASE WHEN {TERMINAL} THEN abort_reason "
                 "ELSE $2 END WHERE saga_id = $1 RETURNING status")
# An outside event ($2) for a saga ($1), unless it is queued or was consumed (the inbox).
ENQUEUE = ("INSERT INTO {s}events (saga_id, message_id, type, payload, received_at) SELECT "
           "$1, $2, $3, $4, {received} WHERE NOT EXISTS (SELECT 1 FROM {s}inbox WHERE "
           "consumer = 'saga' AND message_id = $2) ON CONFLICT (saga_id, message_id) DO NOTHING")
SELECT_EVENTS = ("SELECT seq, message_id, type, payload, received_at FROM {s}events WHERE "
                 "saga_id = $1 ORDER BY seq")
CONSUME_EVENT = "DELETE FROM {s}events WHERE saga_id = $1 AND seq = $2"
# Unsent messages that no live claim of another relay holds ($2: now, $3: the lease).
CLAIM_MESSAGES = (
    f"UPDATE {{s}}outbox SET claimed_by = $1, claimed_until = {now_sql(2)} + $3 WHERE id IN "
    "(SELECT id FROM {s}outbox WHERE sent_at IS NULL AND (claimed_by IS NULL OR claimed_by = "
    f"$1 OR claimed_until <= {now_sql(2)}) ORDER BY id LIMIT $4{{lock}}) RETURNING id, message")
MARK_SENT = "UPDATE {s}outbox SET sent_at = $2 WHERE id IN ({numbers}($1)) AND sent_at IS NULL"
PARTICIPANT_STATE = (
    "SELECT (SELECT state FROM {s}participants WHERE participant = $1 AND saga_key = $2) AS "
    "state, EXISTS (SELECT 1 FROM {s}inbox WHERE consumer = $1 AND message_id = $3) AS seen")
# A participant's handling of one message ($3): the inbox row first (no row: a duplicate).
CONSUME = ("INSERT INTO {s}inbox (consumer, message_id, saga_id, consumed_at) VALUES "
           "($1, $3, $2, $4) ON CONFLICT (consumer, message_id) DO NOTHING")
SAVE_PARTICIPANT = (
    "INSERT INTO {s}participants (participant, saga_key, state, updated_at) VALUES ($1, $2, $5, "
    "$4) ON CONFLICT (participant, saga_key) DO UPDATE SET state = excluded.state, "
    "updated_at = excluded.updated_at")


class Row(Protocol):
    """A result row read by column name (`sqlite3.Row`, `asyncpg.Record`)."""

    def __getitem__(self, key: str, /) -> Any: ...


@attrs.frozen
class Dialect:
    """How one database spells the shared SQL: `fill` values for the `{name}` placeholders."""

    fill: Mapping[str, str]
    numbered: str = "$"  # "$" (PostgreSQL) or "?" (SQLite)

    def __call__(self, template: str) -> str:
        text = template.format_map(self.fill)
        return text if self.numbered == "$" else re.sub(r"\$(\d+)", r"?\1", text)

    def migrations(self, found: int, url: str) -> list[str]:
        """The statements that take a store at schema version `found` to the current one."""
        if found > SCHEMA_VERSION:
            raise StoreError(
                f"the saga store {url} has schema version {found}, but this statesaga "
                f"supports schema version {SCHEMA_VERSION} at most: upgrade statesaga "
                "(pip install -U statesaga) to use this store; nothing was written to it")
        steps = [self(sql) for version in range(found, SCHEMA_VERSION)
                 for sql in MIGRATIONS[version]]
        if steps:
            steps += [self("DELETE FROM {s}schema_version"),
                      self(f"INSERT INTO {{s}}schema_version VALUES ({SCHEMA_VERSION})")]
        return steps

    def listing(self, status: SagaStatus | None, name: str | None,
                limit: int | None) -> tuple[str, list[Any]]:
        """The query for `list`: newest first (ties: the latest inserted first)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("status", None if status is None else status.value),
                              ("name", name)):
            if value is not None:
                params.append(value)
                where.append(f"{column} = ${len(params)}")
        sql = f"SELECT {SAGA} FROM {{s}}sagas"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, {n} DESC"
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT ${len(params)}"
        return self(sql), params

    def claimable(self, columns: str, *, now: float | None, limit: int,
                  definitions: Sequence[tuple[str, str]] | None, saga_id: str | None,
                  owner: str, lock: str = "") -> tuple[str, list[Any]]:
        """The query for the sagas `claim` may take, oldest first, and its parameters.

        A batch claim never takes a saga `owner` holds, even past its lease: it runs there
        (a process paused or slowed renews it when it goes on; another one may take it)."""
        params: list[Any] = [now, limit]
        if saga_id is not None:  # one saga, by an operator: waiting or stuck is fine
            params.append(saga_id)
            where = "saga_id = $3 AND status NOT IN ('completed', 'compensated')"
        elif definitions is not None:
            params += [json.dumps([list(pair) for pair in definitions]), owner]
            where = (f"{CLAIMABLE} AND (name, version) IN ({{pairs}}($3)) AND (owner IS NULL "
                     "OR owner <> $4)")
        else:
            params.append(owner)
            where = f"{CLAIMABLE} AND (owner IS NULL OR owner <> $3)"
        return self(f"SELECT {columns} FROM {{s}}sagas WHERE {where} AND (owner IS NULL OR "
                    f"lease_until IS NULL OR lease_until <= {now_sql(1)}) ORDER BY created_at, "
                    f"{{n}} LIMIT $2{lock}"), params


def saga_row(record: SagaRecord, data_json: str, owner: str | None, lease: float | None,
             waiting: bool, wake_at: float | None, now: float | None,
             ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The parameters of `INSERT_SAGA`."""
    deadline = record.deadline_at
    return (record.saga_id, record.name, record.version, record.state, record.status.value,
            data_json, storable_text(record.error), record.revision, ts(record.created_at),
            ts(record.updated_at), None if deadline is None else ts(deadline), owner,
            lease, waiting, wake_at, now)


def history_rows(record: SagaRecord, ts: Callable[[datetime], Any]) -> list[tuple[Any, ...]]:
    """The parameters of `INSERT_TRANSITION` for a new saga's history (numbered to its revision)."""
    first = record.revision - len(record.history) + 1
    return [transition_row(record.saga_id, first + i, t, None, ts)
            for i, t in enumerate(record.history)]


def transition_row(saga_id: str, seq: int, t: Transition, result: str | None,
                   ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The parameters of `INSERT_TRANSITION` (error texts made storable)."""
    return (saga_id, seq, ts(t.at), t.source, t.dest, t.event, t.step, t.attempt,
            storable_text(t.error), t.duration, storable_text(t.reason), t.worker, result)


def update_row(commit: Commit, at: Any) -> tuple[Any, ...]:
    """The parameters of `UPDATE_SAGA` (`at`: the transition's time, as the database takes it)."""
    return (commit.saga_id, commit.revision, commit.state, commit.status.value,
            storable_text(commit.error), at, commit.owner, commit.lease, commit.waiting,
            commit.wake_at, commit.now)


def commit_rows(commit: Commit, ts: Callable[[datetime], Any],
                ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The parameters of `UPDATE_SAGA` and `INSERT_TRANSITION` for one commit."""
    transition = transition_row(commit.saga_id, commit.revision, commit.transition,
                                commit.result, ts)
    return update_row(commit, transition[2]), transition


def message_rows(saga_id: str, messages: Iterable[Any], at: Any) -> list[tuple[Any, ...]]:
    """The parameters of `INSERT_MESSAGE`: each message as JSON (attrs records as dicts)."""
    return [(saga_id, message_json(m), at) for m in messages]


def missed(commit: Commit, found: Row | None, url: str) -> NoReturn:
    """Why a commit updated no row (`found`: `SELECT_REVISION`): no saga, a duplicate, a race."""
    saga_id, expected = commit.saga_id, commit.revision - 1
    if found is None:
        raise SagaNotFound(saga_id, url)
    if found["seen"]:
        raise duplicate(commit)
    raise RevisionConflict(
        f"saga {saga_id!r} was changed by another writer (revision {found['revision']}, "
        f"expected {expected}): reload it", saga_id=saga_id, state=found["state"])


def duplicate(commit: Commit) -> DuplicateMessage:
    return DuplicateMessage(f"message {commit.inbox} was consumed before",
                            saga_id=commit.saga_id)


def exists(saga_id: str) -> SagaConflict:
    return SagaConflict(f"saga {saga_id!r} already exists", saga_id=saga_id)


def decode(row: Row, history: Iterable[Row],
           ts: Callable[[Any], datetime], url: str, bump: int = 0) -> SagaRecord:
    """A saga from its row and its transitions (in order), or a `StoreError` if it is corrupt;
    `bump`: claimed after the row was read (revision and fence one higher)."""
    saga_id = row["saga_id"]
    try:
        results: dict[str, Any] = {}
        steps = []
        for t in history:
            steps.append(Transition(ts(t["at"]), t["source"], t["dest"], t["event"], t["step"],
                                    t["attempt"], t["error"], t["duration"], t["reason"],
                                    t["worker"]))
            if t["result"] is not None:
                results[t["step"]] = from_json(t["result"])
        data = _object(from_json(row["data"]))
        deadline = row["deadline_at"]
        return SagaRecord(
            saga_id=saga_id, name=row["name"], version=row["version"], state=row["state"],
            status=SagaStatus(row["status"]), data=data, results=results, error=row["error"],
            history=tuple(steps), created_at=ts(row["created_at"]),
            updated_at=ts(row["updated_at"]),
            revision=row["revision"] + bump, fence=row["fence"] + bump,
            deadline_at=None if deadline is None else ts(deadline))
    except (ValueError, TypeError) as exc:
        raise StoreError(
            f"saga {saga_id!r} in {url} has a corrupt row ({type(exc).__name__}: {exc}): "
            "restore it from a backup or fix it by hand; the store never repairs rows and "
            "serves the other sagas as before", saga_id=saga_id) from exc


def participant_row(row: Row, participant: str, key: str, message_id: str | None,
                    url: str) -> dict[str, Any] | None:
    """A participant's state from `PARTICIPANT_STATE`'s row; `DuplicateMessage` if it applied
    `message_id` before, `StoreError` if the state is corrupt."""
    if row["seen"]:
        raise DuplicateMessage(f"message {message_id} was applied by {participant} before",
                               saga_id=key)
    text = row["state"]
    if text is None:
        return None
    try:
        state = from_json(text)
        if not isinstance(state, dict):
            raise TypeError(f"it is a JSON {type(state).__name__}, not an object")
    except (ValueError, TypeError) as exc:
        raise StoreError(f"the state of participant {participant!r} for {key!r} in {url} is "
                         f"corrupt ({exc}): fix it by hand", saga_id=key) from exc
    return state


def renewed(saga_ids: Sequence[str], rows: Iterable[Row]) -> dict[str, Signals]:
    """`renew`'s answer from `RENEW`'s rows (the sagas still leased): the others are lost."""
    held = {row["saga_id"]: Signals(abort=row["abort_reason"], events=row["events"])
            for row in rows}
    return {saga_id: held.get(saga_id, LOST) for saga_id in saga_ids}


LOST = Signals(lost=True)


def queued(saga_id: str, rows: Iterable[Row], ts: Callable[[Any], datetime],
           url: str) -> list[QueuedEvent]:
    """Queued events from `SELECT_EVENTS`'s rows, or a `StoreError` if one is corrupt."""
    try:
        return [QueuedEvent(row["seq"], row["message_id"], row["type"],
                            _object(from_json(row["payload"])), ts(row["received_at"]))
                for row in rows]
    except (ValueError, TypeError) as exc:
        raise StoreError(f"an event queued for saga {saga_id!r} in {url} is corrupt ({exc}): "
                         "fix it by hand", saga_id=saga_id) from exc


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"it is a JSON {type(value).__name__}, not an object")
    return value


def decode_all(rows: Iterable[Row], history: Iterable[Row],
               ts: Callable[[Any], datetime], url: str, bump: int = 0) -> list[SagaRecord]:
    """The sagas of `rows`, in order; a corrupt one is logged (`saga.corrupt_row`) and skipped."""
    by_saga: dict[str, list[Row]] = {}
    for t in history:
        by_saga.setdefault(t["saga_id"], []).append(t)
    records = []
    for row in rows:
        try:
            records.append(decode(row, by_saga.get(row["saga_id"], ()), ts, url, bump))
        except StoreError as exc:
            _log.error("saga.corrupt_row", saga_id=row["saga_id"], store=url, error=str(exc))
    return records
