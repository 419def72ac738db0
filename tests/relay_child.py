"""A child process for tests/test_store_outbox.py: one relay (`Choreography.relay`).

    python tests/relay_child.py STORE_URL

It opens the store, prints "ready", waits for a line on stdin, then relays the outbox until
it finds it empty, to a bus that notes each message it is given; it prints the message ids
it sent, one JSON list, and exits.
"""

from __future__ import annotations

import asyncio
import json
import sys

from statesaga import Orchestrator, open_store
from statesaga.choreography import Choreography
from statesaga.events import Event, Handler


class NotingBus:
    """A bus that accepts every event and notes its message id (slowly, so relays overlap)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def publish(self, event: Event) -> None:
        await asyncio.sleep(0.001)
        self.sent.append(event.message_id)

    async def subscribe(self, event_type: str, handler: Handler, *, group: str = "default"
                        ) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass


async def main(url: str) -> None:
    async with open_store(url) as store:
        bus = NotingBus()
        relay = Choreography(Orchestrator(store=store), bus)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await relay.relay(batch=7)
    print(json.dumps(bus.sent), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
