"""The PostgreSQL store's own statements: one round trip per call, built from `_sql`'s parts."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from . import _sql

# The types of the transitions' columns, in `_sql.INSERT_TRANSITION` order (saga_id ... result).
TYPES = ("text", "bigint", "timestamptz", "text", "text", "text", "text", "int", "text",
         "float8", "text", "text", "text")
TRANSITION = ("INSERT INTO {s}transitions (saga_id, seq, at, source, dest, event, step, "
              "attempt, error, duration, reason, worker, result) ")
# A new saga's history: the transition's columns but the first (saga_id) and the last (result).
HISTORY = slice(1, len(TYPES) - 1)
OUTBOX = ("INSERT INTO {{s}}outbox (saga_id, message, created_at) SELECT $1, "
          "m.message, ${at} FROM s, unnest(${n}::text[]) WITH ORDINALITY AS m(message, i) "
          "ORDER BY m.i")


# A participant's handling of one message ($3), gated on its inbox row (none: a duplicate).
APPLY = f"""WITH i AS ({_sql.CONSUME} RETURNING 1),
    p AS (INSERT INTO {{s}}participants (participant, saga_key, state, updated_at)
          SELECT $1, $2, $5, $4 FROM i ON CONFLICT (participant, saga_key)
          DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at),
    o AS (INSERT INTO {{s}}outbox (saga_id, message, created_at) SELECT $2, m.message, $4
          FROM i, unnest($6::text[]) WITH ORDINALITY AS m(message, n) ORDER BY m.n)
    SELECT count(*) FROM i"""


def create_sql(many: bool, outbox: bool) -> str:
    """One statement: the saga ($1-$16), its history ($17-$27: arrays if `many`), messages."""
    history = [f"${17 + i}::{t}{'[]' if many else ''}" for i, t in enumerate(TYPES[HISTORY])]
    source = (f"s.saga_id, h.*, NULL FROM s, unnest({', '.join(history)}) AS h" if many
              else f"s.saga_id, {', '.join(history)}, NULL FROM s")
    sql = (f"WITH s AS ({_sql.INSERT_SAGA} RETURNING saga_id), "
           f"h AS ({TRANSITION}SELECT {source})")
    if outbox:
        sql += ", o AS (" + OUTBOX.format(at=9, n=17 + len(history)) + ")"
    return sql + " SELECT count(*) FROM s"


def commit_sql(outbox: bool, inbox: bool, consumed: bool) -> str:
    """One statement: the update ($1-$11), the transition ($12-$21), messages, the inbox, the
    queued event consumed; returns the abort reason and how many events stay queued."""
    values = ["$1", "$2", "$6", *(f"${9 + i}::{t}" for i, t in enumerate(TYPES) if i > 2)]
    sql = (f"WITH s AS ({_sql.UPDATE_SAGA}), t AS ({TRANSITION}SELECT {', '.join(values)} "
           "FROM s)")
    n = 9 + len(TYPES)
    if outbox:
        sql += ", o AS (" + OUTBOX.format(at=6, n=n) + ")"
        n += 1
    if inbox:
        sql += (", i AS (INSERT INTO {s}inbox (consumer, message_id, saga_id, consumed_at) "
                f"SELECT 'saga', ${n}::text, $1, $6 FROM s)")
        n += 1
    if not consumed:
        return sql + " SELECT abort_reason, events FROM s"
    return sql + (f", e AS (DELETE FROM {{s}}events WHERE saga_id = $1 AND seq = ${n}::bigint "
                  "AND EXISTS (SELECT 1 FROM s) RETURNING 1) "
                  "SELECT abort_reason, events - (SELECT count(*) FROM e) FROM s")


CLAIM = """WITH c AS ({candidates})
    UPDATE {s}sagas AS s SET owner = {owner}, lease_until = {until}, revision = s.revision + 1,
        fence = s.fence + 1,
        status = CASE c.status WHEN 'pending' THEN 'running' ELSE c.status END
    FROM c WHERE s.saga_id = c.saga_id
    RETURNING s.saga_id, s.name, s.version, s.state, c.status, s.data, s.error, s.revision,
        s.created_at, s.updated_at, s.deadline_at, s.fence, s.n"""

# The columns of a saga row, in `_sql.saga_row` order.
_SAGA = (("saga_id", "text"), ("name", "text"), ("version", "text"), ("state", "text"),
         ("status", "text"), ("data", "text"), ("error", "text"), ("revision", "bigint"),
         ("created_at", "timestamptz"), ("updated_at", "timestamptz"),
         ("deadline_at", "timestamptz"), ("owner", "text"), ("lease", "float8"),
         ("waiting", "boolean"), ("wake_at", "float8"), ("now", "float8"))
# A new saga's first transition: the transition's columns but saga_id and result (`HISTORY`).
_FIRST = tuple(zip(("h_seq", "h_at", "h_source", "h_dest", "h_event", "h_step", "h_attempt",
                    "h_error", "h_duration", "h_reason", "h_worker"), TYPES[HISTORY],
                   strict=True))
# The columns of a commit, in `_sql.update_row` order then the transition's from `source` on.
_COMMIT = (("saga_id", "text"), ("revision", "bigint"), ("state", "text"), ("status", "text"),
           ("error", "text"), ("at", "timestamptz"), ("owner", "text"),
           ("lease", "float8"), ("waiting", "boolean"), ("wake_at", "float8"), ("now", "float8"),
           *((f"t_{name}", kind) for name, kind in zip(
               ("source", "dest", "event", "step", "attempt", "error", "duration", "reason",
                "worker", "result"), TYPES[3:], strict=True)))


_UNTIL = "coalesce(c.now, {clock})"  # a row's lease runs from its `now`, or the server's clock


def _rows(columns: tuple[tuple[str, str], ...]) -> str:
    """`c`: one row per saga from a JSON array of arrays ($1), one value per column. One text
    parameter, not an array per column: asyncpg's per-element array encoding cost the client
    twice the CPU per batch (185 against 86 µs for 16 commits), the server 30 µs more."""
    values = ", ".join(f"(e->>{i})::{kind} AS {name}" for i, (name, kind) in enumerate(columns))
    return f"c AS (SELECT {values} FROM jsonb_array_elements($1::jsonb) AS e)"


def create_many_sql() -> str:
    """One statement for many new sagas with one transition each and no messages (rows in
    `_sql.saga_row` then `HISTORY` order); returns the ids it created (not those taken)."""
    saga = ", ".join(name for name, _ in _SAGA[:12])
    first = ", ".join(name for name, _ in _FIRST)
    return f"""WITH {_rows(_SAGA + _FIRST)},
    s AS (INSERT INTO {{s}}sagas ({saga}, lease_until, waiting, wake_at, fence)
          SELECT {saga}, lease + {_UNTIL}, waiting, wake_at, 1 FROM c
          ON CONFLICT (saga_id) DO NOTHING RETURNING saga_id),
    h AS ({TRANSITION}SELECT c.saga_id, {first}, NULL FROM c JOIN s ON s.saga_id = c.saga_id)
    SELECT saga_id FROM s"""


def commit_many_sql() -> str:
    """One statement for many sagas' plain commits (no messages, no inbox), each a row of
    the values `commit_sql` takes as $1-$21; returns the sagas it moved, with their abort
    reasons and queued events. A saga at another revision is left alone (not returned)."""
    return f"""WITH {_rows(_COMMIT)},
    s AS (UPDATE {{s}}sagas AS g SET revision = c.revision, state = c.state,
          status = c.status, error = c.error, updated_at = c.at, owner = c.owner,
          lease_until = c.lease + {_UNTIL}, waiting = c.waiting, wake_at = c.wake_at
          FROM c WHERE g.saga_id = c.saga_id AND g.revision = c.revision - 1
          RETURNING g.saga_id, g.abort_reason,
              (SELECT count(*) FROM {{s}}events e WHERE e.saga_id = g.saga_id) AS events),
    t AS ({TRANSITION}SELECT c.saga_id, c.revision, c.at, c.t_source, c.t_dest, c.t_event,
          c.t_step, c.t_attempt, c.t_error, c.t_duration, c.t_reason, c.t_worker, c.t_result
          FROM c JOIN s ON s.saga_id = c.saga_id)
    SELECT saga_id, abort_reason, events FROM s"""


def batch_json(rows: Sequence[Sequence[Any]]) -> str:
    """A batch's rows as one JSON array; times as ISO text (naive ones as UTC, as asyncpg)."""
    return json.dumps(rows, default=_iso)


def _iso(value: Any) -> str:
    if not isinstance(value, datetime):
        raise TypeError(f"{type(value).__name__} in a batch row")  # pragma: no cover
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
