"""What the store tests share: the backends under test, and sagas and commits to write."""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs

from statesaga import InMemoryStore, SagaRecord, SagaStatus, Transition
from statesaga.stores.base import Commit, SagaStore
from statesaga.stores.postgres import PostgresStore
from statesaga.stores.sqlite import SQLiteStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
TRICKY_IDS = ["it's", 'say "hi"', "x'); DROP TABLE sagas; --", "%_\\", "ünï 👍"]


@attrs.define
class Backend:
    """One kind of store under test, with raw SQL access to what it wrote."""

    kind: str
    path: Path | None = None
    dsn: str = ""
    schema: str = ""
    options: dict[str, Any] = attrs.Factory(dict)  # for every store it makes
    stores: list[SagaStore] = attrs.Factory(list)

    def store(self, **options: Any) -> Any:
        options = self.options | options
        if self.kind == "memory":
            store: Any = InMemoryStore()
        elif self.kind == "sqlite":
            assert self.path is not None
            store = SQLiteStore(self.path, **options)
        else:
            store = PostgresStore(self.dsn, schema=self.schema, **options)
        self.stores.append(store)
        return store

    async def sql(self, query: str, *args: Any) -> list[tuple[Any, ...]]:
        """Run `query` ($1-style parameters) on the database itself, outside the store."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(str(self.path), isolation_level=None)
            try:
                return conn.execute(re.sub(r"\$(\d+)", r"?\1", query), args).fetchall()
            finally:
                conn.close()
        import asyncpg

        conn2 = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        try:
            return [tuple(row) for row in await conn2.fetch(query, *args)]
        finally:
            await conn2.close()

    async def transitions(self, store: Any, saga_id: str) -> int:
        """How many transition rows the store holds for `saga_id`."""
        if self.kind == "memory":
            row = store._rows.get(saga_id)
            return 0 if row is None else len(row.history)
        rows = await self.sql("SELECT count(*) FROM transitions WHERE saga_id = $1", saga_id)
        count: int = rows[0][0]
        return count

    async def sagas(self, store: Any) -> list[str]:
        """The ids of every saga the store holds, sorted (read outside the store)."""
        if self.kind == "memory":
            return sorted(store._rows)
        return sorted(r[0] for r in await self.sql("SELECT saga_id FROM sagas"))


def saga(saga_id: str = "s1", *, name: str = "trip", version: str = "v1", at: datetime = T0,
         status: SagaStatus = SagaStatus.RUNNING, data: dict[str, Any] | None = None,
         deadline_at: datetime | None = None, worker: str | None = "w1") -> SagaRecord:
    """A new saga's record as a store returns it after `create` (fence 1)."""
    return SagaRecord(
        saga_id=saga_id, name=name, version=version, state="book", status=status,
        data={"flight": "LH1"} if data is None else data, results={}, error=None,
        history=(Transition(at, None, "book", "start", worker=worker),), created_at=at,
        updated_at=at, revision=1, deadline_at=deadline_at, fence=1)


async def create(store: SagaStore, record: SagaRecord, *, owner: str | None = "w1",
                 now: float | None = None, lease: float | None = None, waiting: bool = False,
                 messages: tuple[Any, ...] = (), wake_at: float | None = None,
                 data_json: str | None = None) -> SagaRecord:
    await store.create(record, data_json=_json(record.data) if data_json is None else data_json,
                       owner=owner, now=now, lease=lease, waiting=waiting, messages=messages,
                       wake_at=wake_at)
    return record


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def count_calls(store: Any, *names: str) -> Counter[str]:
    """Count the calls of `store`'s methods `names` (each one a transaction)."""
    calls: Counter[str] = Counter()

    def spy(name: str) -> Any:
        method = getattr(store, name)

        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls[name] += 1
            return await method(*args, **kwargs)
        return counted

    for name in names:
        setattr(store, name, spy(name))
    return calls


def step(saga_id: str, revision: int, source: str, dest: str, *, result: Any = None,
         status: SagaStatus = SagaStatus.RUNNING, owner: str | None = "w1",
         now: float | None = None, lease: float | None = None, messages: tuple[Any, ...] = (),
         waiting: bool = False, wake_at: float | None = None, inbox: str | None = None,
         worker: str | None = "w1", consumed: int | None = None, error: str | None = None,
         result_json: str | None = None) -> Commit:
    """A commit moving `saga_id` from `source` to `dest` at `revision`."""
    at = T0 + timedelta(seconds=revision)
    return Commit(
        saga_id=saga_id, revision=revision, state=dest, status=status, error=error,
        transition=Transition(at, source, dest, "succeed", source, 1, error, 0.25,
                              worker=worker),
        result=result_json if result is None else _json(result), owner=owner, now=now,
        lease=lease, messages=messages, waiting=waiting, wake_at=wake_at, inbox=inbox,
        consumed=consumed)
