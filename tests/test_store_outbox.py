"""The outbox and participants on every store: each message sent once, each command run once."""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from storekit import Backend, create, saga, step

from statesaga.events import Event
from statesaga.participants import Participant

CHILD = Path(__file__).with_name("relay_child.py")


async def test_outbox_messages_are_claimed_oldest_first_until_marked_sent(store: Any) -> None:
    await create(store, saga(), messages=({"n": 1},))
    await store.commit(step("s1", 2, "book", "pay", messages=({"n": 2}, {"n": 3})))

    claimed = await store.claim_messages("r1", now=0, lease=10, limit=10)
    await store.mark_sent([i for i, _ in claimed[:2]])

    assert ['{"n":1}', '{"n":2}', '{"n":3}'] == [m for _, m in claimed]
    assert sorted(i for i, _ in claimed) == [i for i, _ in claimed]
    assert [claimed[2]] == await store.claim_messages("r1", now=1, lease=10, limit=10)
    assert [] == await store.claim_messages("r2", now=5, lease=10, limit=10)  # r1's, live
    assert [claimed[2]] == await store.claim_messages("r2", now=11, lease=10, limit=1)


async def test_relays_claiming_at_once_never_get_one_message_twice(backend: Backend) -> None:
    one, two = backend.store(), backend.store() if backend.kind != "memory" else None
    two = two or one.reopen()
    await create(one, saga(), messages=tuple({"n": i} for i in range(60)))

    batches = await asyncio.gather(*(
        store.claim_messages(f"r{i}-{j}", now=0, lease=10, limit=7)
        for i in range(6) for j, store in enumerate((one, two))))

    taken = [i for batch in batches for i, _ in batch]
    assert sorted(taken) == sorted(set(taken))
    assert 60 == len(taken)


async def test_two_relays_in_two_processes_send_each_message_once(durable: Backend) -> None:
    store = durable.store()
    url = store.url if durable.kind == "sqlite" else f"{durable.dsn}?schema={durable.schema}"
    events = [Event("Ping", {"n": i}, correlation_id="s1") for i in range(300)]
    await create(store, saga(), messages=tuple(events[:100]))
    await store.commit(step("s1", 2, "book", "pay", messages=tuple(events[100:])))

    relays = [await asyncio.create_subprocess_exec(
        sys.executable, str(CHILD), url, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE) for _ in range(2)]
    for relay in relays:
        assert relay.stdout is not None
        assert b"ready\n" == await asyncio.wait_for(relay.stdout.readline(), 60)
    outputs = await asyncio.wait_for(asyncio.gather(*(
        relay.communicate(b"go\n") for relay in relays)), 120)

    sent = Counter(m for out, _ in outputs for m in json.loads(out))
    assert [0, 0] == [relay.returncode for relay in relays]
    assert {e.message_id: 1 for e in events} == dict(sent)
    assert [] == await store.claim_messages("late", now=None, lease=10, limit=10)


async def test_a_participant_given_the_same_command_twice_runs_its_handler_once(
        store: Any) -> None:
    ran: list[str] = []

    def book(command: Event, state: dict[str, Any]) -> Event:
        ran.append(command.message_id)
        state["rooms"] = state.get("rooms", 0) + 1
        return Event("Booked")

    hotel, again = Participant("hotel", store), Participant("hotel", store.reopen())
    for p in (hotel, again):
        p.on("Book", emits=["Booked"])(book)
    command = Event("Book", correlation_id="s1")

    outcomes = [await hotel.handle(command), await hotel.handle(command),
                await again.handle(command)]  # another process, the same database

    assert [True, False, False] == outcomes
    assert [command.message_id] == ran
    assert {"rooms": 1} == await store.participant_state("hotel", "s1")
    assert ["Booked"] == [json.loads(m)["type"] for _, m in await store.claim_messages(
        "relay", now=None, lease=10, limit=10)]


async def test_a_participant_applies_each_message_once(store: Any) -> None:
    assert None is await store.participant_state("hotel", "s1")

    first = await store.participant_apply("hotel", "s1", "m1", {"rooms": 1},
                                          [{"type": "booked"}])
    again = await store.participant_apply("hotel", "s1", "m1", {"rooms": 2},
                                          [{"type": "booked"}])
    other = await store.participant_apply("flights", "s1", "m1", {"seats": 1}, [])

    assert (True, False, True) == (first, again, other)
    assert {"rooms": 1} == await store.participant_state("hotel", "s1")
    assert ['{"type":"booked"}'] == [m for _, m in await store.claim_messages(
        "relay", now=None, lease=10, limit=10)]
    assert await store.participant_apply("hotel", "s1", "m2", {"rooms": 3}, [])
    assert {"rooms": 3} == await store.participant_state("hotel", "s1")
