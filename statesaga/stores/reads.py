"""The stores' read side for operators: saga summaries without their transitions, and counts.

`SagaReader` is what the console, `statesaga list` and `Orchestrator.list` need from a
store: pages of `SagaSummary` (newest first, keyset paging with an opaque `after` cursor),
counts per status and per definition, leases held, and the outbox's backlog.
"""

from __future__ import annotations

import builtins
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import attrs

from ..exceptions import StoreError
from ..records import SagaStatus

UNFINISHED = (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
MAX_LIMIT = 1000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


@attrs.frozen
class SagaSummary:
    """One saga as a list shows it: where it stands, who holds it, never its history or data.

    `cursor` is the `after` value that continues a listing past this saga.
    """

    saga_id: str
    name: str
    version: str
    state: str
    status: SagaStatus
    error: str | None
    created_at: datetime
    updated_at: datetime
    owner: str | None = None
    lease_until: float | None = None
    revision: int = 0
    waiting: bool = False
    wake_at: float | None = None
    deadline_at: datetime | None = None
    cursor: str = ""

    @property
    def is_stuck(self) -> bool:
        return self.status is SagaStatus.FAILED

    def leased(self, now: float) -> bool:
        """Does a live lease hold this saga at `now` (epoch seconds)?"""
        return self.owner is not None and self.lease_until is not None and \
            self.lease_until > now


def cursor_of(created_at: datetime, n: int) -> str:
    """The opaque cursor of a saga: its creation time in microseconds and its insertion order."""
    micros = (created_at - _EPOCH) // _MICROSECOND
    return f"{micros}-{n}"


def parse_cursor(cursor: str) -> tuple[datetime, int]:
    """(created_at, n) of a cursor; `ValueError` if it is not one."""
    micros, sep, n = cursor.partition("-")
    if not sep or not micros.isdigit() or not n.isdigit() or len(cursor) > 40:
        raise ValueError(f"{cursor[:50]!r} is not a cursor (take `next` from the last page)")
    seconds, rest = divmod(int(micros), 1_000_000)
    try:
        at = datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest)
    except (OverflowError, OSError, ValueError) as exc:
        raise ValueError(f"{cursor[:50]!r} is not a cursor: {exc}") from exc
    return at, int(n)


@attrs.frozen
class SagaQuery:
    """Which sagas to list: every filter given must hold; newest first, `limit` per page.

    `error` matches text inside the error (case-insensitive for ASCII), `id_prefix` the start
    of the saga id, `created_from` <= created_at < `created_to`. `after`: a page's `next`.
    """

    status: SagaStatus | None = None
    name: str | None = None
    version: str | None = None
    state: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    error: str | None = None
    id_prefix: str | None = None
    after: str | None = None
    limit: int = 50

    def __attrs_post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_LIMIT}, not {self.limit}")
        if self.after is not None:
            parse_cursor(self.after)
        for name in ("created_from", "created_to"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware (e.g. UTC), not {value}")


@attrs.frozen
class SagaPage:
    """One page of a listing; `next` is the cursor of the following page (None: the last)."""

    sagas: tuple[SagaSummary, ...]
    next: str | None = None


@attrs.frozen
class DefinitionCount:
    """How many sagas of one definition (name and version) a count found."""

    name: str
    version: str
    count: int


@attrs.frozen
class OutboxStats:
    """The outbox's backlog: messages not yet sent, and when the oldest of them was written."""

    unsent: int
    oldest_unsent_at: datetime | None = None

    def lag(self, now: float) -> float:
        """Seconds the oldest unsent message has waited at `now` (0 when none waits)."""
        if self.oldest_unsent_at is None:
            return 0.0
        return max(0.0, now - self.oldest_unsent_at.timestamp())


@runtime_checkable
class SagaReader(Protocol):
    """The read queries of a store; none of them loads a saga's transitions or data."""

    async def query_sagas(self, query: SagaQuery) -> SagaPage:
        """A page of sagas matching `query`, newest first."""
        ...

    async def saga_summary(self, saga_id: str) -> SagaSummary:
        """One saga's summary; `SagaNotFound` if there is none."""
        ...

    async def count_by_status(self, *, cap: int | None = None) -> dict[SagaStatus, int]:
        """How many sagas are in each status (every status present, zero included).

        With `cap`, a status that has more than `cap` sagas counts as `cap + 1` ("more than
        cap"): each count then reads at most cap + 1 index entries, however many there are.
        """
        ...

    async def count_by_definition(
        self, statuses: Collection[SagaStatus] = UNFINISHED,
    ) -> builtins.list[DefinitionCount]:
        """How many sagas in `statuses` each (name, version) has, by name then version."""
        ...

    async def leased(self, *, now: float | None = None, limit: int = 500
                     ) -> builtins.list[SagaSummary]:
        """Sagas that a worker holds under a lease (with `now`: only live leases), by owner."""
        ...

    async def outbox_stats(self) -> OutboxStats:
        """The outbox's unsent messages: how many, and the oldest one's time."""
        ...


def reader(store: object) -> SagaReader:
    """`store` as a `SagaReader`, or a `StoreError` saying that it has no read queries."""
    if not isinstance(store, SagaReader):
        raise StoreError(f"the store {type(store).__name__} has no read queries (SagaReader: "
                         "query_sagas, count_by_status, ...): use InMemoryStore, SQLiteStore "
                         "or PostgresStore, or implement them")
    return store


async def list_summaries(store: SagaReader, query: SagaQuery, limit: int | None
                         ) -> builtins.list[SagaSummary]:
    """Up to `limit` (None: all) sagas matching `query`, newest first, a page at a time."""
    found: builtins.list[SagaSummary] = []
    after = query.after
    while limit is None or len(found) < limit:
        size = MAX_LIMIT if limit is None else min(MAX_LIMIT, limit - len(found))
        page = await store.query_sagas(attrs.evolve(query, after=after, limit=size))
        found += page.sagas
        if page.next is None:
            break
        after = page.next
    return found


def all_statuses(found: Mapping[str, int]) -> dict[SagaStatus, int]:
    """Counts by status value as a dict over every `SagaStatus`, zeros included."""
    return {status: int(found.get(status.value, 0)) for status in SagaStatus}


def matches(q: SagaQuery, saga_id: str, name: str, version: str, state: str,
            status: SagaStatus, error: str | None, created_at: datetime) -> bool:
    """Does a saga match `q`'s filters (not its cursor)? The SQL stores' `WHERE`, in Python."""
    return ((q.status is None or status is q.status) and (q.name is None or name == q.name)
            and (q.version is None or version == q.version)
            and (q.state is None or state == q.state)
            and (q.created_from is None or created_at >= q.created_from)
            and (q.created_to is None or created_at < q.created_to)
            and (not q.error or (error is not None and _fold(q.error) in _fold(error)))
            and (not q.id_prefix or saga_id.startswith(q.id_prefix)))


def _fold(text: str) -> str:
    """Lower case for ASCII letters only, as SQL's LIKE compares."""
    return text.translate(_ASCII_LOWER)


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def prefix_end(prefix: str) -> str | None:
    """The least string above every string that starts with `prefix` (None: no bound)."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if last == 0xD800:  # surrogates cannot be stored: skip them
            last = 0xE000
        if last <= 0x10FFFF:
            return "".join(chars) + chr(last)
    return None
