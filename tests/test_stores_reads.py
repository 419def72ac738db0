"""The stores' read side (summaries, counts, leases, outbox), the same on every store."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from statesaga import Event, SagaNotFound, SagaRecord, SagaStatus, SQLiteStore, Transition
from statesaga.stores import _sql
from statesaga.stores.base import Commit, SagaStore
from statesaga.stores.reads import (
    DefinitionCount,
    SagaQuery,
    SagaSummary,
    parse_cursor,
    prefix_end,
    reader,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
NOW = T0.timestamp() + 3600
STATES = {SagaStatus.PENDING: "reserve", SagaStatus.RUNNING: "charge",
          SagaStatus.COMPENSATING: "compensating_reserve", SagaStatus.COMPLETED: "completed",
          SagaStatus.COMPENSATED: "compensated", SagaStatus.FAILED: "failed"}


def record(saga_id: str, status: SagaStatus, *, at: datetime = T0, name: str = "order",
           version: str = "v1", error: str | None = None) -> SagaRecord:
    state = STATES[status]
    return SagaRecord(saga_id=saga_id, name=name, version=version, state=state, status=status,
                      data={"big": "x" * 1000}, results={}, error=error,
                      history=(Transition(at, None, state, "start"),), created_at=at,
                      updated_at=at, revision=1)


async def add(store: SagaStore, rec: SagaRecord, *, owner: str | None = None,
              until: float | None = None, messages: tuple[Event, ...] = ()) -> None:
    await store.create(rec, data_json='{"big": "' + "x" * 1000 + '"}', owner=owner,
                       now=NOW, lease=None if until is None else until - NOW,
                       messages=messages)


async def test_a_listing_pages_newest_first_and_every_saga_comes_once(
        saga_store: SagaStore) -> None:
    for i in range(7):  # four share one creation time: the insertion order breaks the tie
        await add(saga_store, record(f"s{i}", SagaStatus.COMPLETED,
                                     at=T0 + timedelta(seconds=min(i, 3))))
    seen: list[str] = []
    after = None
    for _ in range(5):
        page = await reader(saga_store).query_sagas(SagaQuery(limit=3, after=after))
        seen += [s.saga_id for s in page.sagas]
        after = page.next
        if after is None:
            break
    assert ["s6", "s5", "s4", "s3", "s2", "s1", "s0"] == seen


async def test_a_summary_carries_no_history_and_no_data(saga_store: SagaStore) -> None:
    await add(saga_store, record("s1", SagaStatus.RUNNING), owner="w1", until=NOW + 10)
    page = await reader(saga_store).query_sagas(SagaQuery())
    expected = SagaSummary(saga_id="s1", name="order", version="v1", state="charge",
                           status=SagaStatus.RUNNING, error=None, created_at=T0,
                           updated_at=T0, owner="w1", lease_until=NOW + 10, revision=1,
                           cursor=page.sagas[0].cursor)
    assert (expected,) == page.sagas
    assert expected == await reader(saga_store).saga_summary("s1")
    assert not hasattr(page.sagas[0], "history")
    assert not hasattr(page.sagas[0], "data")
    with pytest.raises(SagaNotFound):
        await reader(saga_store).saga_summary("ghost")


async def test_every_filter_narrows_the_listing(saga_store: SagaStore) -> None:
    await add(saga_store, record("pay-1", SagaStatus.FAILED, error="Hotel API said 503"))
    await add(saga_store, record("pay-2", SagaStatus.COMPLETED, version="v2",
                                 at=T0 + timedelta(hours=1)))
    await add(saga_store, record("trip-1", SagaStatus.RUNNING, name="trip",
                                 at=T0 + timedelta(hours=2)))
    await add(saga_store, record("pay_%\\", SagaStatus.COMPENSATED, error="100% off_",
                                 at=T0 + timedelta(hours=3)))
    cases = [
        (SagaQuery(status=SagaStatus.FAILED), ["pay-1"]),
        (SagaQuery(name="order", version="v2"), ["pay-2"]),
        (SagaQuery(state="charge"), ["trip-1"]),
        (SagaQuery(created_from=T0 + timedelta(minutes=30),
                   created_to=T0 + timedelta(hours=2)), ["pay-2"]),
        (SagaQuery(error="api SAID"), ["pay-1"]),
        (SagaQuery(error="0% off_"), ["pay_%\\"]),
        (SagaQuery(error="%"), ["pay_%\\"]),
        (SagaQuery(id_prefix="pay-"), ["pay-2", "pay-1"]),
        (SagaQuery(id_prefix="pay_%"), ["pay_%\\"]),
        (SagaQuery(id_prefix="p", status=SagaStatus.COMPLETED), ["pay-2"]),
        (SagaQuery(name="nobody"), []),
    ]
    for query, expected in cases:
        page = await reader(saga_store).query_sagas(query)
        assert (query, expected) == (query, [s.saga_id for s in page.sagas])


async def test_counts_per_status_and_unfinished_per_definition(saga_store: SagaStore) -> None:
    for i, status in enumerate([*SagaStatus, SagaStatus.FAILED, SagaStatus.RUNNING]):
        await add(saga_store, record(f"s{i}", status, version="v2" if i % 2 else "v1"))
    await add(saga_store, record("t1", SagaStatus.RUNNING, name="trip"))
    counts = await reader(saga_store).count_by_status()
    assert {SagaStatus.PENDING: 1, SagaStatus.RUNNING: 3, SagaStatus.COMPENSATING: 1,
            SagaStatus.COMPLETED: 1, SagaStatus.COMPENSATED: 1, SagaStatus.FAILED: 2} == counts
    capped = await reader(saga_store).count_by_status(cap=1)  # more than 1: reported as 2
    assert {SagaStatus.PENDING: 1, SagaStatus.RUNNING: 2, SagaStatus.COMPENSATING: 1,
            SagaStatus.COMPLETED: 1, SagaStatus.COMPENSATED: 1, SagaStatus.FAILED: 2} == capped
    assert [DefinitionCount("order", "v1", 2), DefinitionCount("order", "v2", 2),
            DefinitionCount("trip", "v1", 1)] == await reader(saga_store).count_by_definition()
    assert [DefinitionCount("order", "v1", 1), DefinitionCount("order", "v2", 1)] == \
        await reader(saga_store).count_by_definition([SagaStatus.FAILED])


async def test_leases_are_listed_by_owner_live_ones_alone_with_now(
        saga_store: SagaStore) -> None:
    await add(saga_store, record("a", SagaStatus.RUNNING), owner="w2", until=NOW + 5)
    await add(saga_store, record("b", SagaStatus.COMPENSATING), owner="w1", until=NOW + 9)
    await add(saga_store, record("c", SagaStatus.RUNNING), owner="w1", until=NOW - 1)
    await add(saga_store, record("d", SagaStatus.PENDING))
    held = await reader(saga_store).leased()
    assert [("b", "w1", NOW + 9), ("c", "w1", NOW - 1), ("a", "w2", NOW + 5)] == [
        (s.saga_id, s.owner, s.lease_until) for s in held]
    assert ["b", "a"] == [s.saga_id for s in await reader(saga_store).leased(now=NOW)]
    assert [True, False] == [s.leased(NOW) for s in held[:2]]


async def test_outbox_stats_count_the_unsent_and_date_the_oldest(
        saga_store: SagaStore) -> None:
    assert (0, None, 0.0) == ((s := await reader(saga_store).outbox_stats()).unsent,
                              s.oldest_unsent_at, s.lag(NOW))
    first = Event("Reserve", {"n": 1}, correlation_id="a", timestamp=T0.timestamp())
    await add(saga_store, record("a", SagaStatus.RUNNING), messages=(first,))
    await add(saga_store, record("b", SagaStatus.RUNNING, at=T0 + timedelta(seconds=60)),
              messages=(Event("Reserve", correlation_id="b",
                              timestamp=T0.timestamp() + 60),) * 2)
    stats = await reader(saga_store).outbox_stats()
    assert (3, T0) == (stats.unsent, stats.oldest_unsent_at)
    assert 3600.0 == pytest.approx(stats.lag(NOW))
    sent = await saga_store.claim_messages("relay", now=NOW, lease=60, limit=1)
    await saga_store.mark_sent([sent[0][0]])
    stats = await reader(saga_store).outbox_stats()
    assert (2, T0 + timedelta(seconds=60)) == (stats.unsent, stats.oldest_unsent_at)


async def test_a_summary_follows_the_sagas_commits(saga_store: SagaStore) -> None:
    await add(saga_store, record("s", SagaStatus.RUNNING), owner="w", until=NOW)
    later = T0 + timedelta(seconds=3)
    await saga_store.commit(Commit(
        saga_id="s", revision=2, state="failed", status=SagaStatus.FAILED, error="stuck",
        transition=Transition(later, "charge", "failed", "fail", step="charge")))
    summary = await reader(saga_store).saga_summary("s")
    assert ("failed", SagaStatus.FAILED, "stuck", later, None, 2, True) == (
        summary.state, summary.status, summary.error, summary.updated_at, summary.owner,
        summary.revision, summary.is_stuck)


def test_queries_refuse_bad_limits_cursors_and_naive_times() -> None:
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": "yesterday"}, {"after": "1-x"},
                {"after": "9" * 30 + "-1"},
                {"created_from": datetime(2026, 1, 1)}):
        with pytest.raises(ValueError):  # noqa: PT011 - each message is checked by the web
            SagaQuery(**bad)  # type: ignore[arg-type]
    assert (T0, 7) == parse_cursor(f"{round(T0.timestamp() * 1e6)}-7")


def test_a_prefix_ends_past_every_string_that_starts_with_it() -> None:
    assert "ab" < "abc\U0010ffff" < str(prefix_end("abc"))
    assert "abd" == prefix_end("abc")
    assert "b" == prefix_end("a\U0010ffff")
    assert "\ue000" == prefix_end("\ud7ff")
    assert prefix_end("\U0010ffff") is None


async def test_a_version_1_sqlite_store_gains_the_read_indexes(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        from statesaga.stores._sqlite_db import SQLITE as _SQLITE

        for sql in _SQLITE.migrations(0, "old")[:len(_sql.MIGRATIONS[0])]:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_version VALUES (1)")
    store = SQLiteStore(path)
    await add(store, record("s1", SagaStatus.RUNNING))
    assert ["s1"] == [s.saga_id for s in (await store.query_sagas(SagaQuery())).sagas]
    await store.close()
    with sqlite3.connect(path) as conn:
        version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                              "type = 'index' AND name LIKE 'sagas_%'")}
    assert (_sql.SCHEMA_VERSION, True) == (version, "sagas_definition_keyset" in indexes)
