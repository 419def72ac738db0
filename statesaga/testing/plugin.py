"""The statesaga pytest plugin (registered through the `pytest11` entry point).

Fixtures: `saga_store` (memory, SQLite, and PostgreSQL when reachable via
`STATESAGA_TEST_POSTGRES`), `saga_orchestrator` and `saga_clock`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ..orchestrator import Orchestrator
from ..stores.base import SagaStore
from .clock import FakeClock

POSTGRES = os.environ.get("STATESAGA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def saga_clock() -> FakeClock:
    """Virtual time: sleeps, timeouts and deadlines pass instantly."""
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def saga_store(request: pytest.FixtureRequest, tmp_path: Path
                     ) -> AsyncIterator[SagaStore]:
    """A fresh saga store of each kind; PostgreSQL in its own schema, dropped afterwards."""
    from ..stores.memory import InMemoryStore

    store: SagaStore
    if request.param == "memory":
        store = InMemoryStore()
    elif request.param == "sqlite":
        from ..stores.sqlite import SQLiteStore

        store = SQLiteStore(tmp_path / "sagas.db")
    else:
        from ..stores.postgres import PostgresStore

        schema = f"test_{uuid.uuid4().hex[:10]}"
        store = PostgresStore(POSTGRES, schema=schema)
        try:
            await store.open()
        except Exception as exc:
            await store.close()
            message = (f"PostgreSQL not reachable at {POSTGRES} ({exc}); start it, or set "
                       "STATESAGA_TEST_POSTGRES")
            if os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1":
                pytest.fail(message)
            pytest.skip(message)
    yield store
    await store.close()
    if request.param == "postgres":
        await drop_postgres_schema(POSTGRES, schema)


async def drop_postgres_schema(dsn: str, schema: str) -> None:
    """Drop a test's PostgreSQL schema with everything in it."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
def saga_orchestrator(saga_store: SagaStore, saga_clock: FakeClock) -> Orchestrator:
    """An orchestrator over `saga_store`, on `saga_clock`."""
    return Orchestrator(store=saga_store, clock=saga_clock)
