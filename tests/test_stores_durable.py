"""The durable stores (SQLite, PostgreSQL): what they keep, bad rows, and each one's faults."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog
from storekit import T0, Backend, create, saga, step

from statesaga import InMemoryStore, SagaConflict, SagaError, StoreError
from statesaga.stores._schema import SCHEMA_VERSION
from statesaga.stores.base import Signals
from statesaga.stores.postgres import PostgresStore
from statesaga.stores.sqlite import SQLiteStore
from statesaga.stores.urls import open_store, redact

WAIT = 60.0  # a guard against hangs, never a measure

# -- the durable stores: what they keep, and what they do with bad rows ----------------------


async def test_sagas_survive_closing_and_reopening_the_store(durable: Backend) -> None:
    first = durable.store()
    await first.open()
    assert [(SCHEMA_VERSION,)] == await durable.sql("SELECT version FROM schema_version")
    await create(first, saga())
    await first.commit(step("s1", 2, "book", "pay", result={"ok": True}))
    await first.close()

    loaded = await durable.store().load("s1")

    assert ("pay", {"book": {"ok": True}}) == (loaded.state, dict(loaded.results))
    assert [(SCHEMA_VERSION,)] == await durable.sql("SELECT version FROM schema_version")


async def test_messages_are_written_to_the_outbox_only_with_their_transition(
        durable: Backend) -> None:
    store = durable.store()
    event = saga("evt")  # any attrs record
    await create(store, saga(), messages=({"type": "started"},))
    await store.commit(step("s1", 2, "book", "pay", messages=(event, {"type": "paid"})))
    with pytest.raises(SagaConflict):
        await store.commit(step("s1", 2, "book", "pay", messages=({"type": "lost"},)))

    rows = await durable.sql("SELECT saga_id, message, sent_at FROM outbox ORDER BY id")

    assert [("s1", None)] * 3 == [(r[0], r[2]) for r in rows]
    assert ['{"type":"started"}', '{"type":"paid"}'] == [rows[0][1], rows[2][1]]
    assert '"saga_id":"evt"' in rows[1][1]


@pytest.mark.parametrize("data", ["{oops", "[1, 2]"])
async def test_a_corrupt_row_fails_its_load_and_is_skipped_by_list_and_claim(
        durable: Backend, data: str) -> None:
    store = durable.store()
    for i, saga_id in enumerate(("bad", "good")):
        await create(store, saga(saga_id, at=T0 + timedelta(seconds=i)), owner=None)
    await durable.sql("UPDATE sagas SET data = $1 WHERE saga_id = $2", data, "bad")

    with pytest.raises(StoreError, match=r"'bad'.*corrupt") as raised:
        await store.load("bad")
    with structlog.testing.capture_logs() as logs:
        listed = await store.list()
        claimed = await store.claim("w1", now=0, lease=10, limit=1)  # the oldest is corrupt

    assert "bad" == raised.value.saga_id
    assert (["good"], ["good"]) == ([r.saga_id for r in listed], [r.saga_id for r in claimed])
    assert [("saga.corrupt_row", "bad", "error")] * 2 == [
        (e["event"], e["saga_id"], e["log_level"]) for e in logs]
    with pytest.raises(StoreError, match="corrupt"):
        await store.claim("op", now=100, lease=10, limit=1, saga_id="bad")


async def test_a_participant_state_that_is_not_json_consumes_nothing(
        durable: Backend) -> None:
    store = durable.store()

    with pytest.raises(SagaError, match="hotel's state cannot be stored"):
        await store.participant_apply("hotel", "s1", "m1", {"when": T0}, [{"type": "x"}])

    assert await store.participant_apply("hotel", "s1", "m1", {"ok": True}, [])
    assert [] == await store.claim_messages("relay", now=0, lease=10, limit=10)
    await durable.sql("UPDATE participants SET state = $1", "{oops")
    with pytest.raises(StoreError, match=r"participant 'hotel'.*corrupt"):
        await store.participant_state("hotel", "s1")


async def test_a_corrupt_result_fails_the_load_naming_the_saga(durable: Backend) -> None:
    store = durable.store()
    await create(store, saga())
    await store.commit(step("s1", 2, "book", "pay", result={"ok": True}))
    await durable.sql("UPDATE transitions SET result = $1 WHERE saga_id = $2", "[1,", "s1")

    with pytest.raises(StoreError, match="saga 's1'"):
        await store.load("s1")


async def test_a_store_with_a_newer_schema_refuses_to_open_and_writes_nothing(
        durable: Backend) -> None:
    first = durable.store()
    await create(first, saga())
    await first.close()
    await durable.sql("UPDATE schema_version SET version = 99")

    newer = durable.store()
    with pytest.raises(StoreError,
                       match=rf"schema version 99.*version {SCHEMA_VERSION} at most.*upgrade"):
        await newer.load("s1")
    with pytest.raises(StoreError, match="schema version 99"):
        await create(newer, saga("s2"))

    assert [(1,)] == await durable.sql("SELECT count(*) FROM sagas")
    assert [(99,)] == await durable.sql("SELECT version FROM schema_version")


async def test_a_failing_write_rolls_the_whole_commit_back(durable: Backend) -> None:
    store = durable.store()
    await create(store, saga())
    if durable.kind == "sqlite":
        await durable.sql("CREATE TRIGGER boom BEFORE INSERT ON transitions WHEN "
                          "NEW.dest = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END")
    else:
        await durable.sql("ALTER TABLE transitions ADD CONSTRAINT boom CHECK (dest <> 'boom')")

    with pytest.raises(StoreError, match="rolled back"):
        await store.commit(step("s1", 2, "book", "boom", messages=({"type": "x"},)))

    loaded = await store.load("s1")
    assert ("book", 1, 1) == (loaded.state, loaded.revision, len(loaded.history))
    assert [(0,)] == await durable.sql("SELECT count(*) FROM outbox")
    await store.commit(step("s1", 2, "book", "pay"))


# -- SQLite -------------------------------------------------------------------------------


async def test_sqlite_commits_grouped_run_in_the_writer_thread_while_the_event_loop_goes_on(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", writer_thread=True)
    for saga_id in ("s1", "s2"):
        await create(store, saga(saga_id))
    writers: list[str] = []
    go = threading.Event()

    def hold(dest: str) -> int:  # called by the commit's INSERT, where the commit runs
        writers.append(threading.current_thread().name)
        go.wait(WAIT)
        return 0

    assert store._conn is not None
    store._conn.create_function("hold", 1, hold)
    store._conn.execute("CREATE TRIGGER hold BEFORE INSERT ON transitions "
                        "BEGIN SELECT hold(NEW.dest); END")
    try:
        commits = asyncio.gather(*(store.commit(step(i, 2, "book", "pay"))
                                   for i in ("s1", "s2")))  # ready together: one batch
        while not writers:  # noqa: ASYNC110 - the loop runs while the batch is held
            await asyncio.sleep(0.01)
        meanwhile = await store.load("s1")  # and reads go on, on their own connection
        go.set()
        signals = await asyncio.wait_for(commits, WAIT)
    finally:
        go.set()
        await store.close()

    assert {"statesaga-sqlite-writer"} == set(writers)
    assert (1, [Signals()] * 2) == (meanwhile.revision, signals)


@pytest.mark.parametrize(("durability", "writer_thread", "expected"), [
    ("full", None, False), ("normal", None, False), ("normal", True, True),
    ("full", True, True)])
async def test_sqlite_writes_grouped_writes_in_a_thread_only_when_asked(
        tmp_path: Path, durability: str, writer_thread: bool | None, expected: bool) -> None:
    options = {} if writer_thread is None else {"writer_thread": writer_thread}
    store = SQLiteStore(tmp_path / "s.db", durability=durability, **options)
    writers: list[tuple[str, str]] = []
    await store.open()
    assert store._conn is not None
    store._conn.create_function("note", 1, lambda saga_id: writers.append(
        (saga_id, threading.current_thread().name)) or 0)
    store._conn.execute("CREATE TRIGGER note BEFORE INSERT ON sagas "
                        "BEGIN SELECT note(NEW.saga_id); END")

    await create(store, saga("alone"))
    await asyncio.gather(*(create(store, saga(i)) for i in ("g1", "g2")))  # one batch
    again = store.reopen()
    await store.close()

    main = threading.main_thread().name
    assert (expected, expected) == (store.writer_thread, again.writer_thread)
    assert [("alone", main)] + [(i, "statesaga-sqlite-writer" if expected else main)
                                for i in ("g1", "g2")] == writers


@pytest.mark.parametrize(("options", "message"), [
    ({"durability": "paranoid"}, "'full' or 'normal'"), ({"busy_timeout": -1}, ">= 0")])
def test_sqlite_rejects_bad_options(tmp_path: Path, options: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SQLiteStore(tmp_path / "s.db", **options)


@pytest.mark.parametrize(("durability", "synchronous"), [("full", 2), ("normal", 1)])
async def test_sqlite_uses_wal_and_the_synchronous_level_of_its_durability(
        tmp_path: Path, durability: str, synchronous: int) -> None:
    store = SQLiteStore(tmp_path / "s.db", durability=durability)
    try:
        await create(store, saga())
        conn = store._conn
        assert conn is not None
        assert ("wal", synchronous) == (conn.execute("PRAGMA journal_mode").fetchone()[0],
                                        conn.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        await store.close()


async def test_two_sqlite_stores_on_one_file_let_only_one_writer_win(tmp_path: Path) -> None:
    one, two = SQLiteStore(tmp_path / "s.db"), SQLiteStore(tmp_path / "s.db")
    try:
        await create(one, saga(), owner=None)
        assert 1 == (await two.load("s1")).revision

        await one.commit(step("s1", 2, "book", "pay"))
        with pytest.raises(SagaConflict):
            await two.commit(step("s1", 2, "book", "ship"))
        assert ["s1"] == [r.saga_id for r in await two.claim("w2", now=0, lease=9, limit=1)]
        assert [] == await one.claim("w1", now=1, lease=9, limit=1)
        assert ("pay", 3) == ((loaded := await one.load("s1")).state, loaded.revision)
    finally:
        await one.close()
        await two.close()


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


async def test_a_sqlite_file_locked_past_the_busy_timeout_raises_and_writes_nothing(
        tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", busy_timeout=0.2)
    await create(store, saga())
    locker = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LOCKER, str(tmp_path / "s.db"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE)
    assert locker.stdin is not None
    assert locker.stdout is not None
    try:
        assert b"locked\n" == await locker.stdout.readline()
        with pytest.raises(StoreError, match=r"locked.*busy_timeout=0\.2s"):
            await store.commit(step("s1", 2, "book", "pay"))
        with pytest.raises(StoreError, match="locked"):  # a store opening it waits as long
            await SQLiteStore(tmp_path / "s.db", busy_timeout=0.1).load("s1")
    finally:
        locker.stdin.close()
        await locker.wait()

    assert 1 == (await store.load("s1")).revision
    await store.commit(step("s1", 2, "book", "pay"))  # resumed: the same commit goes through
    assert 2 == (await store.load("s1")).revision
    await store.close()


async def test_a_full_disk_raises_and_rolls_the_whole_transition_back(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    await create(store, saga())
    conn = store._conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}").fetchall()  # the disk is now full
    big = step("s1", 2, "book", "pay", result={"blob": "x" * 100_000})

    with pytest.raises(StoreError, match=r"full.*rolled back.*free disk space"):
        await store.commit(big)

    assert (1, "book", 1) == ((r := await store.load("s1")).revision, r.state, len(r.history))
    conn.execute("PRAGMA max_page_count = 1073741823").fetchall()
    await store.commit(big)
    assert {"book": {"blob": "x" * 100_000}} == (await store.load("s1")).results
    await store.close()


async def test_a_sqlite_path_that_cannot_be_opened_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the saga store"):
        await SQLiteStore(tmp_path / "missing" / "dir" / "s.db").load("s1")


# -- PostgreSQL ---------------------------------------------------------------------------


async def test_an_unreachable_postgres_raises_store_error_with_the_password_hidden() -> None:
    store = PostgresStore("postgresql://app:s3cret@127.0.0.1:1/sagas", connect_timeout=5)

    with pytest.raises(StoreError, match="cannot connect") as raised:
        await store.load("s1")

    assert "postgresql://app:***@127.0.0.1:1/sagas" in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert isinstance(raised.value.__cause__, OSError)


def test_postgres_refuses_a_schema_that_is_not_an_identifier() -> None:
    with pytest.raises(ValueError, match="identifier"):
        PostgresStore("postgresql://localhost/db", schema='x"; DROP SCHEMA public; --')


async def test_postgres_keeps_its_tables_in_its_own_schema(postgres_dsn: str,
                                                           pg_schema: str) -> None:
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    await store.open()
    await store.close()
    backend = Backend("postgres", dsn=postgres_dsn, schema=pg_schema)

    tables = await backend.sql("SELECT table_name FROM information_schema.tables WHERE "
                               "table_schema = $1 ORDER BY 1", pg_schema)

    assert ["events", "inbox", "outbox", "participants", "sagas", "schema_version",
            "transitions"] == [
        t for (t,) in tables]


async def test_two_postgres_workers_claiming_at_once_never_share_a_saga(
        postgres_dsn: str, pg_schema: str) -> None:
    one, two = (PostgresStore(postgres_dsn, schema=pg_schema) for _ in range(2))
    try:
        for i in range(20):
            await create(one, saga(f"s{i}"), owner=None)
        batches = await asyncio.gather(*(
            store.claim(f"w{i}", now=0, lease=60, limit=3) for i in range(6)
            for store in (one, two)))
        taken = [r.saga_id for batch in batches for r in batch]
        assert sorted(taken) == sorted(set(taken))
        assert 20 == len(taken)
    finally:
        await one.close()
        await two.close()


async def test_more_postgres_calls_at_once_than_pooled_connections_all_finish(
        postgres_dsn: str, pg_schema: str) -> None:
    store = PostgresStore(postgres_dsn, schema=pg_schema, min_size=1, max_size=2)
    try:
        await create(store, saga())

        loads = await asyncio.wait_for(  # a connection kept idle must not starve a waiter
            asyncio.gather(*(store.load("s1") for _ in range(8))), 30)

        assert [1] * 8 == [r.revision for r in loads]
        assert len(store._idle) <= 2
    finally:
        await store.close()


async def test_a_killed_postgres_connection_costs_at_most_one_failed_call(
        postgres_dsn: str, pg_schema: str) -> None:
    store = PostgresStore(postgres_dsn, schema=pg_schema, min_size=1, max_size=1)
    backend = Backend("postgres", dsn=postgres_dsn, schema=pg_schema)
    try:
        await create(store, saga())
        (conn,) = store._idle
        await backend.sql("SELECT pg_terminate_backend($1)", conn.get_server_pid())

        outcomes = []
        for _ in range(2):  # the first call may still pick the dead connection
            try:
                await store.commit(step("s1", 2, "book", "pay"))
            except StoreError:
                outcomes.append("StoreError")
            else:
                outcomes.append("ok")
                break

        assert outcomes in (["ok"], ["StoreError", "ok"])
        assert 2 == (await store.load("s1")).revision
    finally:
        await store.close()


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "kind", "where"), [
    ("memory://", InMemoryStore, None),
    ("sqlite:///relative/sagas.db", SQLiteStore, ("relative/sagas.db", "full")),
    ("sqlite:////abs/sagas.db?durability=normal", SQLiteStore, ("/abs/sagas.db", "normal")),
    ("postgresql://u:pw@db:5432/app?schema=billing&sslmode=disable", PostgresStore,
     ("postgresql://u:***@db:5432/app?sslmode=disable", "billing")),
    ("postgres://db/app", PostgresStore, ("postgres://db/app", "statesaga")),
])
def test_open_store_maps_each_url_to_its_store(url: str, kind: type, where: Any) -> None:
    store = open_store(url)

    assert kind is type(store)
    if isinstance(store, SQLiteStore):
        assert where == (store.path, store.durability)
        assert url == store.url
    elif isinstance(store, PostgresStore):
        assert where == (store.dsn, store.schema)
        assert "pw" not in store.url


@pytest.mark.parametrize(("url", "message"), [
    ("mysql://db/app", "memory://, sqlite:///relative/path.db"),
    ("sagas.db", "supported"),
    ("sqlite://sagas.db", "three slashes"),
    ("sqlite:///s.db?durability=yolo", "'full' or 'normal'"),
    ("sqlite:///s.db?synchronous=off", "unknown option 'synchronous'"),
    ("postgresql://u:hunter2@db/app?schema=a-b", "identifier"),
])
def test_open_store_rejects_a_url_it_cannot_use(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=re.escape(message)) as raised:
        open_store(url)

    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(("url", "redacted"), [
    ("postgresql://app:s3cret@db:5432/sagas", "postgresql://app:***@db:5432/sagas"),
    ("postgresql://app:p@ss@db/sagas", "postgresql://app:***@db/sagas"),
    ("postgresql://app@db/sagas?password=s3cret&sslmode=require",
     "postgresql://app@db/sagas?password=***&sslmode=require"),
    ("postgresql://db/sagas", "postgresql://db/sagas"),
    ("sqlite:////var/lib/sagas.db", "sqlite:////var/lib/sagas.db"),
    ("memory://", "memory://"),
])
def test_redact_replaces_a_password_with_stars(url: str, redacted: str) -> None:
    assert redacted == redact(url)


def test_importing_statesaga_and_its_stores_does_not_import_asyncpg() -> None:
    code = ("import sys, statesaga, statesaga.stores.postgres, statesaga.stores.urls; "
            "print('asyncpg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)

    assert "False" == out.stdout.strip()
