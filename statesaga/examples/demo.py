"""The trip as a choreography for `statesaga demo --choreography`: the saga and its
participants talk only through the bus."""

from __future__ import annotations

import asyncio
from typing import Any

from ..exceptions import SagaError
from ..orchestrator import Orchestrator
from ..records import SagaRecord


async def choreography_demo(store_url: str, bus_url: str, fail_at: str | None) -> SagaRecord:
    """The trip as a choreography: participants and the saga talk only through the bus."""
    from ..bus_memory import InMemoryBus
    from ..choreography import Choreography
    from ..stores.urls import open_store
    from .trip_choreography import STATES, build_participants, build_trip_choreography

    if fail_at is not None and fail_at not in STATES:
        raise SagaError(f"--fail-at for the choreography is one of {', '.join(STATES)}, "
                        f"not {fail_at!r}")
    bus: Any
    if bus_url == "memory://":
        bus = InMemoryBus()
    else:
        from ..bus_rabbitmq import RabbitMQBus

        bus = RabbitMQBus(bus_url, exchange="statesaga-demo", prefix="statesaga-demo")
    store = open_store(store_url)
    machine = build_trip_choreography()
    orch = Orchestrator(store=store, sagas=[machine])
    choreography = Choreography(orch, bus)
    stop = asyncio.Event()
    try:
        for participant in build_participants(store):
            await participant.listen(bus)
        serving = asyncio.create_task(choreography.serve([machine], stop, poll=0.02))
        record = await choreography.start(machine, {"fail_at": fail_at} if fail_at else {})
        while not record.is_terminal:
            await asyncio.sleep(0.02)
            record = await store.load(record.saga_id)
        stop.set()
        await serving
        return record
    finally:
        stop.set()
        if bus_url == "memory://":
            await bus.close()
        else:  # a demo leaves nothing behind on the broker
            await bus.delete_everything(bus.queues)
        await store.close()

