"""The statesaga pytest plugin (registered through the `pytest11` entry point).

Fixtures: `saga_store` (memory, SQLite, and PostgreSQL when reachable via
`STATESAGA_TEST_POSTGRES`), `saga_orchestrator` and `saga_clock`. The async ones are
pytest-asyncio fixtures, so they work in its strict mode (the default) and in auto mode;
pytest-asyncio comes with `pip install 'statesaga[pytest]'`. Without it, this plugin
stays out of the way: only a test that asks for `saga_store` fails, saying what to install.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest

from ..exceptions import StoreError
from ..orchestrator import Orchestrator
from ..stores.base import SagaStore
from .clock import FakeClock

POSTGRES = os.environ.get("STATESAGA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
KINDS = ["memory", "sqlite", "postgres"]
MISSING = ("the statesaga fixture {name!r} is async and needs pytest-asyncio, which is not "
           "installed: pip install 'statesaga[pytest]' (or pytest-asyncio)")

async_fixture: Callable[..., Any] | None
try:
    import pytest_asyncio
except ImportError:  # the plugin loads in every pytest run where statesaga is installed
    async_fixture = None
else:
    async_fixture = pytest_asyncio.fixture


@pytest.fixture
def saga_clock() -> FakeClock:
    """Virtual time: sleeps, timeouts and deadlines pass instantly."""
    return FakeClock()


async def _saga_store(request: pytest.FixtureRequest, tmp_path: Path
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
        try:
            store = PostgresStore(POSTGRES, schema=schema)
        except StoreError as exc:  # asyncpg is not installed
            _unavailable(str(exc))
        try:
            await store.open()
        except Exception as exc:
            await store.close()
            _unavailable(f"PostgreSQL not reachable at {POSTGRES} ({exc}); start it, or set "
                         "STATESAGA_TEST_POSTGRES")
    yield store
    await store.close()
    if request.param == "postgres":
        await drop_postgres_schema(POSTGRES, schema)


def _unavailable(message: str) -> NoReturn:
    """Skip a store that cannot be had here; fail instead in CI (STATESAGA_REQUIRE_SERVICES=1)."""
    if os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


def _missing(request: pytest.FixtureRequest) -> None:
    pytest.fail(MISSING.format(name=request.fixturename), pytrace=False)


if async_fixture is not None:
    saga_store = async_fixture(_saga_store, name="saga_store", params=KINDS,
                               loop_scope="function")
else:
    saga_store = pytest.fixture(_missing, name="saga_store")


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
