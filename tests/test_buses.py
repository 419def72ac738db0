"""The event buses: one conformance suite over InMemoryBus and RabbitMQBus, then RabbitMQ's own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import attrs
import pytest
from structlog.testing import capture_logs

from statesaga.bus_memory import BusError, InMemoryBus
from statesaga.bus_rabbitmq import RabbitMQBus
from statesaga.events import Event, EventBus
from statesaga.exceptions import SagaError
from statesaga.stores.urls import redact

WAIT = 60.0  # seconds: only a guard against hangs, never a measure


class Buses:
    """Makes buses of one kind that share an exchange and prefix; deletes them all afterwards."""

    def __init__(self, kind: str, url: str = "") -> None:
        self.kind = kind
        self.url = url
        self.prefix = f"test-{uuid.uuid4().hex[:12]}"
        self.made: list[Any] = []
        self.other_queues: list[str] = []  # declared by the test itself

    def __call__(self, *, max_deliveries: int = 5) -> Any:
        bus: Any
        if self.kind == "memory":
            bus = InMemoryBus(max_deliveries=max_deliveries)
        else:
            bus = RabbitMQBus(self.url, exchange=self.prefix, prefix=self.prefix,
                              max_deliveries=max_deliveries)
        self.made.append(bus)
        return bus

    async def dead_letters(self, bus: Any) -> list[tuple[str, str]]:
        """(message id, error) of every dead letter so far."""
        if self.kind == "memory":
            return [(event.message_id, error) for event, error in bus.dead_letters]
        return [(event.message_id, error) for event, error in await bus.take_dead_letters()]

    async def cleanup(self) -> None:
        for bus in self.made:
            await bus.close()
        if self.kind == "rabbitmq":
            queues = {name for bus in self.made for name in bus.queues} | {*self.other_queues}
            await self().delete_everything(queues)


@pytest.fixture(params=["memory", "rabbitmq"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[Buses]:
    url = request.getfixturevalue("rabbitmq_url") if request.param == "rabbitmq" else ""
    made = Buses(request.param, url)
    try:
        yield made
    finally:
        await made.cleanup()


@pytest.fixture
async def rabbit(rabbitmq_url: str) -> AsyncIterator[Buses]:
    made = Buses("rabbitmq", rabbitmq_url)
    try:
        yield made
    finally:
        await made.cleanup()


async def settle(bus: Any) -> None:
    await asyncio.wait_for(bus.drain(), WAIT)


# --- the conformance suite: both buses ---------------------------------------------------


def test_an_event_as_a_dict_has_exactly_its_fields() -> None:
    event = Event("FlightBooked", {"flight": "LH1", "seats": [1]}, correlation_id="t1",
                  causation_id="m0", timestamp=1700000000.5)

    assert attrs.asdict(event) == event.as_dict()
    assert event == Event.from_json(event.to_json())


async def test_both_buses_are_event_buses(buses: Buses) -> None:
    assert isinstance(buses(), EventBus)


async def test_an_event_arrives_with_every_field_intact(buses: Buses) -> None:
    bus = buses()
    received: list[Event] = []
    await bus.subscribe("trip.FlightBooked", received.append)
    event = Event("trip.FlightBooked", payload={"flight": "LH1", "seats": [1, 2], "ok": True,
                                                "price": {"eur": 12.5}, "note": None, "é": "ü"},
                  correlation_id="trip-42", causation_id="m-0", timestamp=1700000000.125)

    await bus.publish(event)
    await settle(bus)

    assert [event] == received


async def test_every_group_gets_every_event_and_handles_each_once(buses: Buses) -> None:
    bus = buses()
    a1: list[Event] = []
    a2: list[Event] = []
    b: list[Event] = []
    await bus.subscribe("order.Placed", a1.append, group="a")
    await bus.subscribe("order.Placed", a2.append, group="a")
    await bus.subscribe("order.Placed", b.append, group="b")
    events = [Event("order.Placed", {"n": n}) for n in range(20)]

    for event in events:
        await bus.publish(event)
    await settle(bus)

    expected = sorted(e.message_id for e in events)
    assert expected == sorted(e.message_id for e in a1 + a2)
    assert expected == sorted(e.message_id for e in b)


async def test_an_event_of_another_type_does_not_reach_a_subscriber(buses: Buses) -> None:
    bus = buses()
    received: list[Event] = []
    await bus.subscribe("order.Placed", received.append)
    await bus.subscribe("order.Cancelled", lambda e: None)

    await bus.publish(Event("order.Cancelled"))
    await settle(bus)

    assert [] == received


async def test_sync_and_async_handlers_both_receive_events(buses: Buses) -> None:
    bus = buses()
    got: list[tuple[str, str]] = []

    def sync_handler(event: Event) -> None:
        got.append(("sync", event.message_id))

    async def async_handler(event: Event) -> None:
        await asyncio.sleep(0)
        got.append(("async", event.message_id))

    await bus.subscribe("ping", sync_handler, group="s")
    await bus.subscribe("ping", async_handler, group="a")
    event = Event("ping")

    await bus.publish(event)
    await settle(bus)

    assert [("async", event.message_id), ("sync", event.message_id)] == sorted(got)


async def test_a_handler_that_fails_twice_gets_the_event_a_third_time_and_keeps_it(
        buses: Buses) -> None:
    bus = buses()
    calls: list[str] = []

    def flaky(event: Event) -> None:
        calls.append(event.message_id)
        if len(calls) < 3:
            raise ConnectionError("the service is not up yet")

    await bus.subscribe("ping", flaky)
    event = Event("ping")

    await bus.publish(event)
    await settle(bus)

    assert [event.message_id] * 3 == calls
    assert [] == await buses.dead_letters(bus)


async def test_a_poison_event_is_dead_lettered_after_max_deliveries_and_the_next_still_arrives(
        buses: Buses) -> None:
    bus = buses(max_deliveries=3)
    calls: list[str] = []

    async def handler(event: Event) -> None:
        calls.append(event.message_id)
        if event.payload["poison"]:
            raise ValueError("cannot digest")

    await bus.subscribe("meal", handler)
    poison, good = Event("meal", {"poison": True}), Event("meal", {"poison": False})

    with capture_logs() as logs:
        await bus.publish(poison)
        await bus.publish(good)
        await settle(bus)

    assert [poison.message_id] * 3 == [c for c in calls if c == poison.message_id]
    assert [good.message_id] == [c for c in calls if c == good.message_id]
    assert [(poison.message_id, "ValueError: cannot digest")] == await buses.dead_letters(bus)
    dead = [entry for entry in logs if entry["event"] == "bus.dead_letter"]
    assert [(poison.message_id, "meal", "ValueError: cannot digest", "error")] == [
        (e["message_id"], e["type"], e["error"], e["log_level"]) for e in dead]


async def test_a_payload_that_is_not_json_fails_at_publish(buses: Buses) -> None:
    bus = buses()
    await bus.subscribe("ping", lambda e: None)

    with pytest.raises(SagaError, match="payload of event 'ping' cannot be stored"):
        await bus.publish(Event("ping", {"when": object()}))


async def test_a_closed_bus_refuses_to_publish(buses: Buses) -> None:
    bus = buses()
    await bus.subscribe("ping", lambda e: None)
    await bus.close()

    with pytest.raises(BusError, match="closed"):
        await bus.publish(Event("ping"))


# --- the in-memory bus ------------------------------------------------------------------------


async def test_the_memory_bus_takes_turns_between_the_subscribers_of_a_group() -> None:
    bus = InMemoryBus()
    first: list[int] = []
    second: list[int] = []
    await bus.subscribe("n", lambda e: first.append(e.payload["n"]))
    await bus.subscribe("n", lambda e: second.append(e.payload["n"]))

    for n in range(6):
        await bus.publish(Event("n", {"n": n}))
    await settle(bus)
    await bus.close()

    assert ([0, 2, 4], [1, 3, 5]) == (first, second)


async def test_the_memory_bus_drain_waits_for_events_that_handlers_publish() -> None:
    bus = InMemoryBus()
    seen: list[str] = []

    async def relay(event: Event) -> None:
        seen.append(event.type)
        await bus.publish(Event("second", causation_id=event.message_id))

    await bus.subscribe("first", relay)
    await bus.subscribe("second", lambda e: seen.append(e.type))

    await bus.publish(Event("first"))
    await settle(bus)
    await bus.close()

    assert ["first", "second"] == seen


async def test_the_memory_bus_redelivers_a_failed_event_after_the_ones_queued_behind_it() -> None:
    bus = InMemoryBus()
    order: list[str] = []

    def handler(event: Event) -> None:
        order.append(event.payload["name"])
        if order.count(event.payload["name"]) == 1 and event.payload["name"] == "a":
            raise RuntimeError("once")

    await bus.subscribe("x", handler)
    for name in "abc":
        await bus.publish(Event("x", {"name": name}))
    await settle(bus)
    await bus.close()

    assert ["a", "b", "c", "a"] == order


def test_a_bus_needs_at_least_one_delivery() -> None:
    with pytest.raises(BusError, match="max_deliveries must be at least 1, got 0"):
        InMemoryBus(max_deliveries=0)
    with pytest.raises(BusError, match="max_deliveries must be at least 1, got 0"):
        RabbitMQBus("amqp://127.0.0.1/", max_deliveries=0)


def test_importing_statesaga_and_its_memory_bus_does_not_import_aio_pika() -> None:
    code = ("import sys, statesaga, statesaga.bus_memory; "
            "sys.exit('aio_pika' in sys.modules)")
    assert 0 == subprocess.run([sys.executable, "-c", code], check=False).returncode


# --- RabbitMQ only ------------------------------------------------------------------------------


async def raw_channel(url: str) -> tuple[aio_pika.abc.AbstractConnection,
                                         aio_pika.abc.AbstractChannel]:
    connection = await aio_pika.connect(url)
    return connection, await connection.channel(publisher_confirms=True)


async def rabbitmqctl(*args: str) -> None:
    if shutil.which("rabbitmqctl") is None:
        msg = ("rabbitmqctl is not installed: cannot restart the broker "
               "(apt-get install rabbitmq-server)")
        if os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1":
            pytest.fail(msg + " (STATESAGA_REQUIRE_SERVICES=1 makes this a failure)")
        pytest.skip(msg)
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    assert 0 == proc.returncode, err.decode()


@contextlib.asynccontextmanager
async def broker_stopped() -> AsyncIterator[None]:
    """Stop the RabbitMQ application, and start it again whatever happens."""
    await rabbitmqctl("stop_app")
    try:
        yield
    finally:
        await rabbitmqctl("start_app")


async def test_a_message_that_is_not_an_event_is_dead_lettered_and_the_consumer_goes_on(
        rabbit: Buses) -> None:
    bus = rabbit()
    received: list[Event] = []
    await bus.subscribe("ping", received.append)
    connection, channel = await raw_channel(rabbit.url)
    exchange = await channel.get_exchange(rabbit.prefix)
    bad = {"raw-1": b"not json", "raw-2": b'{"payload": {}}', "raw-3": b"\xff\xfe"}

    with capture_logs() as logs:
        for message_id, body in bad.items():
            await exchange.publish(aio_pika.Message(body, message_id=message_id), "ping")
        await connection.close()
        event = Event("ping")
        await bus.publish(event)
        await settle(bus)

    assert [event] == received
    letters = await bus.take_dead_letters()
    assert sorted(bad.values()) == sorted(body for body, _ in letters)
    assert {"not an event"} == {error.split(":")[0] for _, error in letters}
    assert sorted(bad) == sorted(e["message_id"] for e in logs if e["event"] == "bus.dead_letter")


async def test_a_confirmed_event_waits_on_disk_through_a_broker_restart_for_its_subscriber(
        rabbit: Buses) -> None:
    declaring = rabbit()
    await declaring.subscribe("ping", lambda e: None)  # the queue exists from now on
    await declaring.close()
    publishing = rabbit()
    event = Event("ping", {"n": 1}, correlation_id="s-1")
    await publishing.publish(event)
    await publishing.close()
    connection, channel = await raw_channel(rabbit.url)
    queue = await channel.get_queue(f"{rabbit.prefix}.default.ping")
    stored = await queue.get(timeout=WAIT)
    await stored.nack(requeue=True)
    await connection.close()

    async with broker_stopped():
        pass
    received: list[Event] = []
    subscriber = rabbit()
    await subscriber.subscribe("ping", received.append)
    await settle(subscriber)

    assert aio_pika.DeliveryMode.PERSISTENT == stored.delivery_mode
    assert [event] == received


async def die_holding(rabbit: Buses, **options: Any) -> Event:
    """Publish a ping to a consumer whose handler never returns, then close that consumer
    while it holds the message (it dies before the ack); the ping."""
    started = asyncio.Event()

    async def hangs(event: Event) -> None:
        started.set()
        await asyncio.Event().wait()

    dying = rabbit(**options)
    await dying.subscribe("ping", hangs)
    event = Event("ping")
    await dying.publish(event)
    await asyncio.wait_for(started.wait(), WAIT)
    await dying.close()
    return event


async def test_an_event_whose_consumer_dies_before_the_ack_goes_to_the_next_consumer(
        rabbit: Buses) -> None:
    event = await die_holding(rabbit)

    received: list[Event] = []
    successor = rabbit()
    await successor.subscribe("ping", received.append)
    await settle(successor)

    assert [event] == received
    assert [] == await rabbit.dead_letters(successor)


async def test_an_event_whose_consumers_keep_dying_is_dead_lettered_without_another_try(
        rabbit: Buses) -> None:
    event = await die_holding(rabbit, max_deliveries=1)

    received: list[Event] = []
    successor = rabbit(max_deliveries=1)
    await successor.subscribe("ping", received.append)
    await settle(successor)

    assert [] == received
    letters = await rabbit.dead_letters(successor)
    assert [event.message_id] == [message_id for message_id, _ in letters]
    assert letters[0][1].startswith("delivered 1 times without an ack")


async def test_publishes_wait_out_a_broker_restart_up_to_reconnect_timeout_and_all_arrive(
        rabbit: Buses) -> None:
    bus = rabbit()
    received: list[Event] = []
    await bus.subscribe("ping", received.append)
    impatient = RabbitMQBus(rabbit.url, exchange=rabbit.prefix, prefix=rabbit.prefix,
                            reconnect_timeout=0.5)
    rabbit.made.append(impatient)
    await impatient.connect()
    before = [Event("ping", {"when": "before"}) for _ in range(5)]
    during = [Event("ping", {"when": "during"}) for _ in range(5)]
    after = [Event("ping", {"when": "after"}) for _ in range(5)]

    for event in before:
        await bus.publish(event)
    await settle(bus)
    async with broker_stopped():
        waiting = asyncio.gather(*(bus.publish(event) for event in during))
        with pytest.raises(BusError) as caught:
            await asyncio.wait_for(impatient.publish(Event("ping")), WAIT)
    await asyncio.wait_for(waiting, WAIT)
    for event in after:
        await bus.publish(event)
    await settle(bus)

    expected = sorted(e.message_id for e in before + during + after)
    assert expected == sorted({e.message_id for e in received})  # at least once: maybe twice
    assert f"RabbitMQ at {redact(rabbit.url)} has been unreachable for 0.5 s" in str(caught.value)


async def test_an_unreachable_broker_is_an_error_naming_the_url_without_its_password() -> None:
    bus = RabbitMQBus("amqp://guest:s3cret@127.0.0.1:5999/", connect_timeout=3)

    with pytest.raises(BusError) as caught:
        await asyncio.wait_for(bus.publish(Event("ping")), WAIT)

    message = str(caught.value)
    assert "cannot connect to RabbitMQ at amqp://guest:***@127.0.0.1:5999/" in message
    assert "s3cret" not in message
    assert caught.value.__cause__ is not None


async def test_a_broker_that_does_not_answer_is_an_error_after_the_connect_timeout() -> None:
    bus = RabbitMQBus("amqp://guest:s3cret@10.255.255.1:5672/", connect_timeout=0.5)

    with pytest.raises(BusError, match=r"amqp://guest:\*\*\*@10\.255\.255\.1:5672/"):
        await asyncio.wait_for(bus.connect(), WAIT)


async def test_a_wildcard_event_type_cannot_be_subscribed_to(rabbit: Buses) -> None:
    bus = rabbit()

    with pytest.raises(BusError, match="no '\\*' or '#'"):
        await bus.subscribe("order.*", lambda e: None)


async def test_a_queue_of_the_same_name_with_other_settings_is_a_clear_error(
        rabbit: Buses) -> None:
    connection, channel = await raw_channel(rabbit.url)
    rabbit.other_queues.append(f"{rabbit.prefix}.default.ping")
    await channel.declare_queue(f"{rabbit.prefix}.default.ping", durable=False)
    await connection.close()
    bus = rabbit()

    with pytest.raises(BusError, match="cannot subscribe to 'ping': RabbitMQ refused"):
        await asyncio.wait_for(bus.subscribe("ping", lambda e: None), WAIT)
