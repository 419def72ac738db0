"""Shared test set-up: real services when reachable, and a clear failure when CI needs them."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from storekit import Backend

POSTGRES_DSN = os.environ.get("STATESAGA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("STATESAGA_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
START = {
    "postgres": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "rabbitmq": "rabbitmq-server -detached",
}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    """Skip (on a laptop) or fail (CI: STATESAGA_REQUIRE_SERVICES=1) when a service is down."""
    if _reachable(host, port):
        return
    msg = f"{name} is not reachable on {host}:{port}; start it with: {START[name]}"
    if os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1":
        pytest.fail(msg + " (STATESAGA_REQUIRE_SERVICES=1 makes this a failure)")
    pytest.skip(msg)


@pytest.fixture(autouse=True)
def _quiet_structlog() -> None:
    """Tests run with info-level events filtered out, as in production."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer()],
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )


@pytest.fixture
def postgres_dsn() -> str:
    need_service("postgres", "127.0.0.1", 5432)
    return POSTGRES_DSN


@pytest.fixture
async def pg_schema(postgres_dsn: str) -> AsyncIterator[str]:
    """A fresh PostgreSQL schema name, dropped afterwards."""
    from statesaga.testing.plugin import drop_postgres_schema

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield schema
    await drop_postgres_schema(postgres_dsn, schema)


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh durable store of each kind (SQLite durability=normal)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sagas.db'}?durability=normal"
    dsn = request.getfixturevalue("postgres_dsn")
    return f"{dsn}?schema={request.getfixturevalue('pg_schema')}"


@pytest.fixture
def rabbitmq_url() -> str:
    need_service("rabbitmq", "127.0.0.1", 5672)
    return RABBITMQ_URL


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if kind == "postgres":
        return Backend(kind, dsn=request.getfixturevalue("postgres_dsn"),
                       schema=request.getfixturevalue("pg_schema"))
    if kind == "sqlite-writer-thread":  # grouped writes in a writer thread
        return Backend("sqlite", path=tmp_path / "sagas.db", options={"writer_thread": True})
    return Backend(kind, path=tmp_path / "sagas.db")


@pytest.fixture(params=["memory", "sqlite", "sqlite-writer-thread", "postgres"])
def any_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request.param, request, tmp_path)


@pytest.fixture(params=["sqlite", "postgres"])
def durable_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return _backend(request.param, request, tmp_path)


@pytest.fixture
async def backend(any_backend: Backend) -> AsyncIterator[Backend]:
    """Each kind of store (memory, SQLite, PostgreSQL): stores it made are closed after."""
    yield any_backend
    for store in any_backend.stores:
        await store.close()


@pytest.fixture
async def durable(durable_backend: Backend) -> AsyncIterator[Backend]:
    """Each durable kind of store (SQLite, PostgreSQL): stores it made are closed after."""
    yield durable_backend
    for store in durable_backend.stores:
        await store.close()


@pytest.fixture
def store(backend: Backend) -> Any:
    """A store of each kind."""
    return backend.store()


def run(coro):  # type: ignore[no-untyped-def]
    """Run a coroutine from sync test code."""
    return asyncio.run(coro)
