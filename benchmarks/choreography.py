"""The trip choreography over RabbitMQ against the broker's own floor, and over the in-memory bus.

The floor is raw aio-pika: persistent messages published concurrently with publisher confirms
to a durable topic exchange and one quorum queue (as `RabbitMQBus` sets them up), consumed and
acked (prefetch 32, `RabbitMQBus`'s default) as they arrive. The choreography is the example
trip, happy path: per saga 3 commands and 3 replies cross the bus (6 messages), and every step
commits to a SQLite saga store (durability="normal") - the saga's state with its outbox, each
participant's state with its inbox. Participants, sagas and relay share one process and loop,
as in `Choreography.serve`; the clock runs from the first saga started to the last completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

from statesaga import Event, InMemoryBus, Orchestrator, SQLiteStore
from statesaga.choreography import Choreography
from statesaga.examples.trip_choreography import (
    SERVICES,
    build_participants,
    build_trip_choreography,
)

from .common import best_of

URL = os.environ.get("STATESAGA_BENCH_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/")
SAGAS = 300
PER_SAGA = 6  # BookFlight, FlightBooked, BookHotel, HotelBooked, ChargePayment, PaymentCharged
MESSAGES = SAGAS * PER_SAGA
RUNS = 5
TARGET = 0.5  # the choreography's message rate, as a share of the floor's
WAIT = 300.0  # a guard against hangs


async def floor() -> float:
    """Seconds per message through RabbitMQ with nothing but aio-pika around it."""
    import aio_pika

    name = f"bench-floor-{uuid.uuid4().hex[:12]}"
    connection = await aio_pika.connect(URL)
    try:
        publisher = await connection.channel(publisher_confirms=True)
        consumer = await connection.channel()
        await consumer.set_qos(prefetch_count=32)
        exchange = await publisher.declare_exchange(name, aio_pika.ExchangeType.TOPIC,
                                                    durable=True)
        try:
            queue = await consumer.declare_queue(name, durable=True,
                                                 arguments={"x-queue-type": "quorum"})
            await queue.bind(name, routing_key="BookFlight")
            elapsed = await _publish_and_consume(exchange, queue)
        finally:
            await consumer.queue_delete(name)
            await publisher.exchange_delete(name)
    finally:
        await connection.close()
    return elapsed / MESSAGES


async def _publish_and_consume(exchange: Any, queue: Any) -> float:
    """Seconds to publish MESSAGES (all at once, each confirmed) and consume and ack them."""
    import aio_pika

    got, done = 0, asyncio.Event()

    async def on_message(message: Any) -> None:
        nonlocal got
        await message.ack()
        got += 1
        if got == MESSAGES:
            done.set()

    tag = await queue.consume(on_message)
    events = [Event("BookFlight", {"flight": "LH1"}, correlation_id=f"trip-{i}")
              for i in range(MESSAGES)]  # the same bodies as the choreography's
    messages = [aio_pika.Message(
        e.to_json().encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=e.message_id, correlation_id=e.correlation_id, type=e.type,
        content_type="application/json") for e in events]
    start = time.perf_counter()
    await asyncio.gather(*(exchange.publish(m, routing_key="BookFlight") for m in messages))
    await asyncio.wait_for(done.wait(), WAIT)
    elapsed = time.perf_counter() - start
    await queue.cancel(tag)
    return elapsed


async def trips(kind: str, profile: cProfile.Profile | None = None) -> float:
    """Seconds per saga: SAGAS trips started at once, until the last one completed.

    kind "split": over RabbitMQ, the participants run in a second process, as the other
    services of a deployment do, with their own SQLite file, outbox and relay.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sagas.db"
        store = SQLiteStore(path, durability="normal")
        await store.open()
        child = None
        if kind in ("rabbitmq", "split"):
            from statesaga import RabbitMQBus

            prefix = f"bench-{uuid.uuid4().hex[:12]}"
            bus: Any = RabbitMQBus(URL, exchange=prefix, prefix=prefix)
        else:
            bus = InMemoryBus()
        machine = build_trip_choreography()
        orch = Orchestrator(store=store, sagas=[machine], lease=60)
        choreography = Choreography(orch, bus)
        if kind == "split":
            child = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks._participants",
                str(Path(tmp) / "services.db"), URL, prefix,
                stdout=asyncio.subprocess.PIPE, cwd=ROOT)
            assert child.stdout is not None
            await asyncio.wait_for(child.stdout.readline(), WAIT)  # "ready"
        else:
            for participant in build_participants(store):
                await participant.listen(bus)
        await choreography.listen([machine])  # what `serve` does, its queues declared first
        stop = asyncio.Event()
        serving = asyncio.gather(choreography.relay(stop=stop), orch.work(stop=stop))
        try:
            with contextlib.closing(sqlite3.connect(path)) as watch:
                if profile is not None:
                    profile.enable()
                start = time.perf_counter()
                await asyncio.gather(*(choreography.start(machine, {"flight": "LH1"},
                                                          saga_id=f"trip-{i}")
                                       for i in range(SAGAS)))
                await asyncio.wait_for(_completed(watch), WAIT)
                elapsed = time.perf_counter() - start
                if profile is not None:
                    profile.disable()
        finally:
            stop.set()
            await serving
            if child is not None:
                child.terminate()
                await child.wait()
            if kind != "memory":
                await bus.delete_everything(
                    [*bus.queues, *(f"{prefix}.{p}s.{c}" for p, c in _COMMANDS)])
            else:
                await bus.close()
            await store.close()
    return elapsed / SAGAS


ROOT = Path(__file__).resolve().parent.parent
_COMMANDS = [(service, command) for service, do, _, _, undo in SERVICES
             for command in (do, undo)]


async def _completed(watch: sqlite3.Connection) -> None:
    query = "SELECT count(*) FROM sagas WHERE status = 'completed'"
    while True:
        if watch.execute(query).fetchone()[0] == SAGAS:
            return
        await asyncio.sleep(0.005)


PATHS = {  # the main paths through the process; nested and overlapping, so they do not add up
    ("choreography.py", "deliver"): "a reply moves its saga (`deliver`: claim, fire, commit)",
    ("participants.py", "handle"): "a participant applies a command (`Participant.handle`)",
    ("bus_rabbitmq.py", "_handle"): "the bus consumes a message, runs its handler, acks it",
    ("bus_rabbitmq.py", "publish"): "the bus publishes one message and awaits its confirm",
    ("connection.py", "__reader"): "aiormq reads and decodes frames from the socket",
    ("connection.py", "__writer"): "aiormq encodes and writes frames to the socket",
    ("sqlite.py", "_run"): "every SQLite transaction (`SQLiteStore._run`)",
}


def where_time_goes(profile: cProfile.Profile, wall: float, top: int = 10) -> list[str]:
    """Markdown tables: the wall time by layer (own time), main paths and top functions."""
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    layers: dict[str, float] = defaultdict(float)
    paths: dict[str, float] = defaultdict(float)
    funcs: list[tuple[float, str]] = []
    calls: dict[str, int] = defaultdict(int)  # SQLite transactions and statements
    for (file, line, func), (_, n, own, cumulative, _) in stats.items():
        layers[_layer(file, func)] += own
        if file.endswith("stores/sqlite.py") and func == "_run":
            calls["transactions"] += n  # plain calls: a coroutine that never suspends
        elif file == "~" and func == "<method 'execute' of 'sqlite3.Connection' objects>":
            calls["statements"] += n
        path = PATHS.get((file.rsplit("/", 1)[-1], func))
        if path is not None and ("statesaga/" in file or "aiormq/" in file):
            paths[path] += cumulative
        funcs.append((own, f"`{_short(file)}` {func}" + (f" (line {line})" if line else "")))
    out = ["| layer (own time, adds up to the profiled time) | share of wall time |", "|---|---:|"]
    out += [f"| {name} | {t / wall:.0%} |" for name, t in sorted(layers.items(),
                                                               key=lambda kv: -kv[1])]
    out += ["", "| path (cumulative: nested paths overlap) | share of wall time |", "|---|---:|"]
    out += [f"| {name} | {paths[name] / wall:.0%} |" for name in PATHS.values()]
    out += ["", "| function (own time) | share of wall time |", "|---|---:|"]
    out += [f"| {name} | {t / wall:.1%} |" for t, name in sorted(funcs, reverse=True)[:top]]
    out += ["", f"SQLite per saga: {calls['transactions'] / SAGAS:.0f} transactions, "
            f"{calls['statements'] / SAGAS:.0f} statements (BEGIN and COMMIT included)."]
    return out


def _layer(file: str, func: str) -> str:
    """What a profiled function belongs to."""
    if file == "~":  # a built-in: named by its function
        for key, name in (("sqlite3", "SQLite (the sqlite3 C calls)"),
                          ("epoll", "idle: the loop waiting in epoll"),
                          ("socket", "socket reads and writes"), ("_json", "JSON"),
                          ("_asyncio", "asyncio event loop"),
                          ("_contextvars", "asyncio event loop")):
            if key in func:
                return name
        return "other built-ins (str, dict, getattr, ...)"
    for key, name in (("/aio_pika/", "AMQP client (aio-pika, aiormq, pamqp)"),
                      ("/aiormq/", "AMQP client (aio-pika, aiormq, pamqp)"),
                      ("/pamqp/", "AMQP client (aio-pika, aiormq, pamqp)"),
                      ("/statesaga/stores/", "statesaga stores (Python around SQLite)"),
                      ("/statesaga/", "statesaga (engine, choreography, bus adapter)"),
                      ("/transitions/", "transitions (the state machine library)"),
                      ("/structlog/", "structlog"), ("/asyncio/", "asyncio event loop"),
                      ("selectors.py", "asyncio event loop"), ("/json/", "JSON"),
                      ("site-packages/", "other libraries (attrs, yarl, ...)")):
        if key in file:
            return name
    return "other stdlib"


def _short(file: str) -> str:
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1]
    if "/statesaga/" in file:
        return "statesaga/" + file.split("/statesaga/", 1)[1]
    if "/lib/python3" in file:
        return file.split("/lib/python3", 1)[1].split("/", 1)[1]
    return "built-in" if file == "~" else file


async def rabbitmq_reachable() -> bool:
    import aio_pika

    try:
        connection = await asyncio.wait_for(aio_pika.connect(URL), 5)
    except Exception:
        return False
    await connection.close()
    return True


async def run() -> list[str]:
    head = [
        f"## Choreography: the trip over RabbitMQ ({SAGAS} sagas, {PER_SAGA} messages each, "
        "SQLite durability=normal)",
        "",
        "| what | messages/s | sagas/s | ratio to floor | target |",
        "|---|---:|---:|---:|---|",
    ]
    if not await rabbitmq_reachable():
        memory = await best_of(RUNS, lambda: trips("memory"))
        return [*head, _memory_row(memory), "", f"RabbitMQ not reachable at {URL}: its rows "
                "skipped (start it with `rabbitmq-server -detached`)."]
    floors, overs, splits, memories, busy = [], [], [], [], []
    for _ in range(RUNS):  # in rounds, so that all of them see the same machine
        floors.append(await floor())
        cpu = time.process_time()
        overs.append(await trips("rabbitmq"))
        busy.append((time.process_time() - cpu) / (overs[-1] * SAGAS))
        splits.append(await trips("split"))
        memories.append(await trips("memory"))
    raw, over, split, memory = map(statistics.median, (floors, overs, splits, memories))
    ratio = statistics.median((PER_SAGA / o) * f for f, o in zip(floors, overs, strict=True))
    split_ratio = statistics.median((PER_SAGA / o) * f
                                    for f, o in zip(floors, splits, strict=True))
    ceiling = statistics.median(f / (f + m / PER_SAGA) for f, m in zip(floors, memories,
                                                                       strict=True))
    met = split_ratio >= TARGET
    lines = [
        *head,
        f"| floor: raw aio-pika, {MESSAGES} persistent messages published concurrently with "
        f"confirms to a quorum queue, consumed and acked | {1 / raw:,.0f} | | 1.00 | |",
        f"| trip choreography over RabbitMQ, participants in a second process with their own "
        f"database, outbox and relay (as in a deployment) | {PER_SAGA / split:,.0f} | "
        f"{1 / split:,.0f} | {split_ratio:.2f} | "
        f"≥ {TARGET:.2f} of the floor: {'met' if met else 'NOT met'} |",
        f"| trip choreography over RabbitMQ, everything in one process | "
        f"{PER_SAGA / over:,.0f} | {1 / over:,.0f} | {ratio:.2f} | "
        f"{'met' if ratio >= TARGET else 'NOT met'} |",
        _memory_row(memory),
        "",
        f"Ratios are medians over {RUNS} rounds of floor, RabbitMQ and in-memory runs. Over "
        f"RabbitMQ the process was busy {statistics.median(busy):.0%} of the wall time (CPU "
        "time / wall; near 100%: CPU-bound). Bus, participants, sagas and relay share one "
        "process and event loop, so each message costs the floor's AMQP client work plus "
        "statesaga's own, which the in-memory run isolates "
        f"({memory / PER_SAGA * 1e6:.0f} µs per message, against the floor's "
        f"{raw * 1e6:.0f} µs): by that estimate the ratio can reach about "
        f"{ceiling:.2f} here.",
    ]
    if ratio < TARGET:
        profile = cProfile.Profile()
        wall = await trips("rabbitmq", profile) * SAGAS
        lines += ["", "Where the time goes in the one-process run (profiled once, "
                  f"{wall:.2f} s wall under cProfile, which inflates Python-heavy code):", "",
                  *where_time_goes(profile, wall)]
    return lines


def _memory_row(memory: float) -> str:
    return (f"| trip choreography, in-memory bus (same store) | {PER_SAGA / memory:,.0f} | "
            f"{1 / memory:,.0f} | | |")


if __name__ == "__main__":
    from .common import quiet_logs

    quiet_logs()
    print("\n".join(asyncio.run(run())))
