"""The SQL of the read side (`reads.SagaReader`), shared by SQLite and PostgreSQL.

Summaries never touch the transitions table. Listings are keyset-paged on (created_at, n)
(n: PostgreSQL's insertion counter, SQLite's rowid), so page 1,000 costs what page 1 does.
Their indexes are schema version 2 (`_sql.MIGRATIONS`).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import Any

from ..exceptions import SagaNotFound
from ..records import SagaStatus
from ._sql import Dialect, Row
from .reads import (
    UNFINISHED,
    DefinitionCount,
    OutboxStats,
    SagaPage,
    SagaQuery,
    SagaSummary,
    all_statuses,
    cursor_of,
    parse_cursor,
    prefix_end,
)

SUMMARY = ("saga_id, name, version, state, status, error, created_at, updated_at, owner, "
           "lease_until, revision, waiting, wake_at, deadline_at, {n} AS n")
SELECT_SUMMARY = f"SELECT {SUMMARY} FROM {{s}}sagas WHERE saga_id = $1"
COUNT_BY_STATUS = "SELECT status, count(*) AS n FROM {s}sagas GROUP BY status"
# Each status counted through the status index, up to $1 rows: fast at any size.
COUNT_CAPPED = " UNION ALL ".join(
    f"SELECT '{status.value}' AS status, (SELECT count(*) FROM (SELECT 1 FROM {{s}}sagas "
    f"WHERE status = '{status.value}' LIMIT $1) AS x) AS n" for status in SagaStatus)
# Only unfinished and stuck sagas hold leases (a finished one releases it): the status index
# finds them without reading the finished ones.
LEASED = (f"SELECT {SUMMARY} FROM {{s}}sagas WHERE status IN ('pending', 'running', "
          "'compensating', 'failed') AND owner IS NOT NULL AND lease_until > $2 "
          "ORDER BY owner, lease_until DESC, saga_id LIMIT $1")
OUTBOX_STATS = ("SELECT (SELECT count(*) FROM {s}outbox WHERE sent_at IS NULL) AS unsent, "
                "(SELECT created_at FROM {s}outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1) "
                "AS oldest")


def statements(d: Dialect) -> dict[str, str]:
    """The fixed read statements in `d`'s spelling."""
    return {name: d(sql) for name, sql in (
        ("SELECT_SUMMARY", SELECT_SUMMARY), ("COUNT_BY_STATUS", COUNT_BY_STATUS),
        ("COUNT_CAPPED", COUNT_CAPPED),
        ("LEASED", LEASED),
        ("OUTBOX_STATS", OUTBOX_STATS))}


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def listing(d: Dialect, q: SagaQuery, ts: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
    """The statement for `query_sagas` and its parameters (it fetches one row more than a
    page, to know whether another page follows)."""
    postgres = d.numbered == "$"
    where: list[str] = []
    params: list[Any] = []

    def param(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    for column in ("name", "version", "state"):
        if getattr(q, column) is not None:
            where.append(f"{column} = {param(getattr(q, column))}")
    if q.status is not None:
        where.append(f"status = {param(q.status.value)}")
    if q.created_from is not None:
        where.append(f"created_at >= {param(ts(q.created_from))}")
    if q.created_to is not None:
        where.append(f"created_at < {param(ts(q.created_to))}")
    if q.error:
        like = "ILIKE" if postgres else "LIKE"
        where.append(f"error {like} {param('%' + escape_like(q.error) + '%')} ESCAPE '\\'")
    if q.id_prefix:
        ge, lt = ("~>=~", "~<~") if postgres else (">=", "<")  # byte order, as the index
        where.append(f"saga_id {ge} {param(q.id_prefix)}")
        end = prefix_end(q.id_prefix)
        if end is not None:
            where.append(f"saga_id {lt} {param(end)}")
    if q.after is not None:
        at, n = parse_cursor(q.after)
        where.append(f"(created_at, {{n}}) < ({param(ts(at))}, {param(n)})")
    sql = f"SELECT {SUMMARY} FROM {{s}}sagas"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY created_at DESC, {{n}} DESC LIMIT {param(q.limit + 1)}"
    return d(sql), params


def summary(row: Row, ts: Callable[[Any], datetime]) -> SagaSummary:
    """A `SagaSummary` from a row of `SUMMARY` columns."""
    created, deadline = ts(row["created_at"]), row["deadline_at"]
    return SagaSummary(
        saga_id=row["saga_id"], name=row["name"], version=row["version"], state=row["state"],
        status=SagaStatus(row["status"]), error=row["error"], created_at=created,
        updated_at=ts(row["updated_at"]), owner=row["owner"], lease_until=row["lease_until"],
        revision=row["revision"], waiting=bool(row["waiting"]), wake_at=row["wake_at"],
        deadline_at=None if deadline is None else ts(deadline),
        cursor=cursor_of(created, row["n"]))


def page(rows: list[Row], q: SagaQuery, ts: Callable[[Any], datetime]
         ) -> tuple[tuple[SagaSummary, ...], str | None]:
    """The page's summaries and the cursor of the next page (None: this is the last)."""
    sagas = tuple(summary(row, ts) for row in rows[:q.limit])
    return sagas, sagas[-1].cursor if len(rows) > q.limit else None


def by_definition(d: Dialect, statuses: Collection[SagaStatus]) -> str:
    """The count per (name, version) of sagas in `statuses`, written out in the statement
    (an IN list the planner sees finds them through the status index; a parameter did not)."""
    listed = ", ".join(f"'{SagaStatus(s).value}'" for s in statuses) or "NULL"
    return d(f"SELECT name, version, count(*) AS n FROM {{s}}sagas WHERE status IN ({listed}) "
             "GROUP BY name, version ORDER BY name, version")


def definitions(rows: Iterable[Row]) -> list[DefinitionCount]:
    return [DefinitionCount(row["name"], row["version"], int(row["n"])) for row in rows]


def outbox(row: Row, ts: Callable[[Any], datetime]) -> OutboxStats:
    oldest = row["oldest"]
    return OutboxStats(int(row["unsent"]), None if oldest is None else ts(oldest))


class SQLReads:
    """The read side (`reads.SagaReader`) of the SQL stores, over the `_rows` each one runs
    its statements with; `_to_db` and `_from_db` convert times as its driver takes them."""

    url: str
    _d: Dialect
    _reads: dict[str, str]
    _to_db: Callable[[datetime], Any]
    _from_db: Callable[[Any], datetime]

    async def _rows(self, sql: str, args: Sequence[Any] = ()) -> builtins.list[Any]:
        raise NotImplementedError

    async def query_sagas(self, query: SagaQuery) -> SagaPage:
        sql, params = listing(self._d, query, self._to_db)
        return SagaPage(*page(await self._rows(sql, params), query, self._from_db))

    async def saga_summary(self, saga_id: str) -> SagaSummary:
        rows = await self._rows(self._reads["SELECT_SUMMARY"], (saga_id,))
        if not rows:
            raise SagaNotFound(saga_id, self.url)
        return summary(rows[0], self._from_db)

    async def count_by_status(self, *, cap: int | None = None) -> dict[SagaStatus, int]:
        rows = await (self._rows(self._reads["COUNT_BY_STATUS"]) if cap is None else
                      self._rows(self._reads["COUNT_CAPPED"], (cap + 1,)))
        return all_statuses({row["status"]: row["n"] for row in rows})

    async def count_by_definition(
        self, statuses: Collection[SagaStatus] = UNFINISHED,
    ) -> builtins.list[DefinitionCount]:
        return definitions(await self._rows(by_definition(self._d, statuses)))

    async def leased(self, *, now: float | None = None, limit: int = 500
                     ) -> builtins.list[SagaSummary]:
        rows = await self._rows(self._reads["LEASED"],
                                (limit, float("-inf") if now is None else now))
        return [summary(row, self._from_db) for row in rows]

    async def outbox_stats(self) -> OutboxStats:
        return outbox((await self._rows(self._reads["OUTBOX_STATS"]))[0], self._from_db)
