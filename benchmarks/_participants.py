"""A second process for the choreography benchmark: the flight, hotel and payment services.

As in a deployment, the services own their database (their state, inbox and outbox) and
relay their own replies. Usage: python -m benchmarks._participants SQLITE_PATH AMQP_URL
PREFIX. Prints `ready` once subscribed; stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from statesaga import Orchestrator, RabbitMQBus, SQLiteStore
from statesaga.choreography import Choreography
from statesaga.examples.trip_choreography import build_participants

from .common import quiet_logs


async def main(path: str, url: str, prefix: str) -> None:
    store = SQLiteStore(path, durability="normal")
    bus = RabbitMQBus(url, exchange=prefix, prefix=prefix)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    for participant in build_participants(store):
        await participant.listen(bus)
    print("ready", flush=True)
    await Choreography(Orchestrator(store=store), bus).relay(poll=0.01, stop=stop)
    await bus.close()
    await store.close()


if __name__ == "__main__":
    quiet_logs()
    asyncio.run(main(*sys.argv[1:4]))
