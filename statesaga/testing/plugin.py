"""The statesaga pytest plugin (registered through the `pytest11` entry point)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ..orchestrator import Orchestrator
from ..stores.base import SagaStore
from ..stores.memory import InMemoryStore
from .clock import FakeClock


@pytest.fixture
def saga_clock() -> FakeClock:
    """Virtual time: sleeps, timeouts and deadlines pass instantly."""
    return FakeClock()


@pytest.fixture
async def saga_store() -> AsyncIterator[SagaStore]:
    """A fresh saga store."""
    store = InMemoryStore()
    yield store
    await store.close()


@pytest.fixture
def saga_orchestrator(saga_store: SagaStore, saga_clock: FakeClock) -> Orchestrator:
    """An orchestrator over `saga_store`, on `saga_clock`."""
    return Orchestrator(store=saga_store, clock=saga_clock)
