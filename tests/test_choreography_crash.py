"""Crashes of a choreography in real processes: a relay killed between the broker's confirm and
`mark_sent`, a participant killed between its commit and its ack, the broker restarted while
sagas run, and a timer that comes due while no process runs.

Children (`tests/choreography_child.py`) serve parts of the trip choreography against one SQLite
file (durability="normal": a process crash loses nothing) and a RabbitMQ exchange and queues
named for the test, deleted afterwards. Participants' applications are logged by the children
(`CALLS`): each command must be applied exactly once, however often it was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from statesaga import Orchestrator, SQLiteStore
from statesaga.choreography import waits_for
from statesaga.examples.trip_choreography import build_participants, build_trip_choreography

CHILD = Path(__file__).with_name("choreography_child.py")
ROOT = CHILD.parent.parent
KILLED = -signal.SIGKILL
WAIT = 60.0  # a guard against hangs, never a measure
TERMINAL = ("completed", "compensated", "failed")
ALL = "sagas,relay,flights,hotels,payments"
PARTICIPANT = {command: p.name for p in build_participants(None) for command in p.handlers}
EXPECTED = {
    None: ["BookFlight", "BookHotel", "ChargePayment"],
    "flight": ["BookFlight"],
    "hotel": ["BookFlight", "BookHotel", "CancelFlight"],
    "payment": ["BookFlight", "BookHotel", "ChargePayment", "CancelHotel", "CancelFlight"],
}


class Child:
    """One child process; its stderr (structlog warnings, tracebacks) goes to `log`."""

    def __init__(self, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.proc, self.log = proc, log
        self.awaited = False  # the test waits for its end (it is not meant to serve on)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def exit(self) -> tuple[int, str]:
        """Wait for it to end; its exit code and the rest of its stdout."""
        self.awaited = True
        out, _ = await asyncio.wait_for(self.proc.communicate(), WAIT)
        assert self.proc.returncode is not None
        return self.proc.returncode, out.decode()

    async def stop(self) -> None:
        """SIGTERM: it stops serving, closes its bus and store, and exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        code, out = await self.exit()
        assert (0, "stopped\n") == (code, out), self.log.read_text()

    async def kill(self) -> None:
        self.proc.kill()
        assert (KILLED, "") == await self.exit()


class Trip:
    """A SQLite file and a RabbitMQ exchange for one test, and the children serving them."""

    def __init__(self, tmp_path: Path, url: str) -> None:
        self.tmp_path, self.url = tmp_path, url
        self.db = tmp_path / "sagas.db"
        self.calls = tmp_path / "calls.jsonl"
        self.prefix = f"test-crash-{uuid.uuid4().hex[:12]}"
        self.children: list[Child] = []

    async def spawn(self, roles: str, **env: str) -> Child:
        """Start a child serving `roles`; returns once its subscriptions exist."""
        log = self.tmp_path / f"child-{len(self.children)}-{roles.replace(',', '-')}.log"
        with log.open("w") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(CHILD), roles, str(self.db), self.url, self.prefix,
                env={**os.environ, "PYTHONPATH": str(ROOT), "CALLS": str(self.calls), **env},
                stdout=asyncio.subprocess.PIPE, stderr=stderr)
        child = Child(proc, log)
        self.children.append(child)
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), WAIT)
        assert b"ready\n" == line, log.read_text()
        return child

    async def start(self, plans: dict[str, str | None], *, timeout: float = 30.0) -> None:
        """Start the sagas, as a web process would: their first commands wait in the outbox."""
        store = SQLiteStore(self.db, durability="normal")
        machine = build_trip_choreography(timeout=timeout)
        orch = Orchestrator(store=store, sagas=[machine])
        try:
            await asyncio.gather(*(orch.run(machine, {} if fail is None else {"fail_at": fail},
                                            saga_id=saga_id) for saga_id, fail in plans.items()))
        finally:
            await store.close()

    def query(self, sql: str, *args: Any) -> list[Any]:
        with contextlib.closing(sqlite3.connect(self.db, timeout=10)) as db:
            return db.execute(sql, args).fetchall()

    def states(self, saga_ids: Iterable[str]) -> dict[str, str]:
        states = dict(self.query("SELECT saga_id, state FROM sagas"))
        return {i: states.get(i, "missing") for i in saga_ids}

    def outbox(self) -> list[tuple[int, str, dict[str, Any], str | None]]:
        """Every message written: (outbox id, saga id, the event as JSON, sent_at)."""
        return [(i, saga, json.loads(m), sent) for i, saga, m, sent in
                self.query("SELECT id, saga_id, message, sent_at FROM outbox ORDER BY id")]

    def commands(self, saga_id: str) -> list[str]:
        """The commands the saga issued, in the order they were written to the outbox."""
        return [m["type"] for _, saga, m, _ in self.outbox()
                if saga == saga_id and m["type"] in PARTICIPANT]

    def sent_commands(self) -> dict[str, str]:
        """Every command in the outbox: its message id and the participant it is for."""
        return {m["message_id"]: PARTICIPANT[m["type"]] for _, _, m, _ in self.outbox()
                if m["type"] in PARTICIPANT}

    def inbox(self) -> set[tuple[str, str]]:
        """(participant, message id) of every command a participant applied."""
        return {(c, m) for c, m in self.query("SELECT consumer, message_id FROM inbox")
                if c != "saga"}

    def applications(self) -> dict[str, list[bool]]:
        """Per command delivered to a participant, in order: applied (True), or a duplicate
        (False: found in the inbox before its handler ran, or refused by `participant_apply`)."""
        out: dict[str, list[bool]] = defaultdict(list)
        if self.calls.exists():
            for line in self.calls.read_text().splitlines():
                call = json.loads(line)
                out[call["message_id"]].append(call["applied"])
        return dict(out)

    def history(self) -> list[tuple[str | None, str, str]]:
        """(source, dest, event) of every transition, in order (the tests with one saga)."""
        return [tuple(row) for row in  # type: ignore[misc]
                self.query("SELECT source, dest, event FROM transitions ORDER BY seq")]

    def bookings(self, saga_ids: Iterable[str]) -> dict[str, set[str]]:
        """Per saga, the participants holding a booking for it."""
        out: dict[str, set[str]] = {i: set() for i in saga_ids}
        for name, key, state in self.query(
                "SELECT participant, saga_key, state FROM participants"):
            if json.loads(state).get("booked") and key in out:
                out[key].add(name)
        return out

    async def settled(self, saga_ids: list[str], *, unapplied: Iterable[str] = ()) -> None:
        """Until every saga is terminal and every command (but `unapplied`) was applied."""
        skip = set(unapplied)

        def done() -> bool:
            if any(s not in TERMINAL for s in self.states(saga_ids).values()):
                return False
            wanted = {(p, m) for m, p in self.sent_commands().items() if m not in skip}
            return wanted <= self.inbox()

        await self.until(done, lambda: f"not settled: {self.states(saga_ids)}")

    async def until(self, check: Callable[[], bool], what: Callable[[], str]) -> None:
        """Poll `check` until it holds, or fail with `what()` and the ends of the children's logs.

        It fails after WAIT s, or once a serving child died; live children dump their tasks.
        """
        deadline = time.monotonic() + WAIT
        while not check():
            dead = [c for c in self.children if c.proc.returncode is not None and not c.awaited]
            if dead or time.monotonic() > deadline:
                live = [c for c in self.children if c.proc.returncode is None]
                for child in live:
                    child.proc.send_signal(signal.SIGUSR1)  # where does it wait?
                await asyncio.sleep(0.5 if live else 0)
                logs = "\n".join(f"--- {c.log.name} (exit code {c.proc.returncode})\n"
                                  + "\n".join(c.log.read_text().splitlines()[-150:])
                                  for c in self.children)
                why = f"a child died: {dead[0].log.name}" if dead else f"after {WAIT}s"
                pytest.fail(f"{what()} ({why})\n{logs}")
            await asyncio.sleep(0.02)

    def assert_ended_right(self, plans: dict[str, str | None]) -> None:
        """Every saga ended as planned, issued exactly its commands, and undid what it did."""
        assert {i: "completed" if f is None else "compensated" for i, f in plans.items()} == \
            self.states(plans)
        assert {i: EXPECTED[f] for i, f in plans.items()} == {i: self.commands(i) for i in plans}
        assert {i: {"flights", "hotels", "payments"} if f is None else set()
                for i, f in plans.items()} == self.bookings(plans)
        assert {(p, m) for m, p in self.sent_commands().items()} == self.inbox()

    def queues(self) -> list[str]:
        """Every queue a child may have declared (sagas' replies, participants' commands)."""
        names = [f"{self.prefix}.sagas.{t}" for t in waits_for(build_trip_choreography())]
        return names + [f"{self.prefix}.{p}.{c}" for c, p in PARTICIPANT.items()]

    async def close(self) -> None:
        for child in self.children:  # only the ones this test started, by their pid
            if child.proc.returncode is None:
                child.proc.kill()
                await child.proc.wait()
        from statesaga import RabbitMQBus

        deadline = time.monotonic() + WAIT
        while True:  # the broker may be restarting (another test run's restart, say)
            bus = RabbitMQBus(self.url, exchange=self.prefix, prefix=self.prefix)
            try:
                await bus.delete_everything(self.queues())
                return
            except Exception:
                with contextlib.suppress(Exception):
                    await bus.close()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)


@pytest.fixture
async def trip(tmp_path: Path, rabbitmq_url: str) -> AsyncIterator[Trip]:
    world = Trip(tmp_path, rabbitmq_url)
    try:
        yield world
    finally:
        await world.close()


def plans(n: int, tag: str, seed: int = 7) -> dict[str, str | None]:
    rng = random.Random(seed)
    return {f"{tag}-{i}": rng.choice([None, None, "flight", "hotel", "payment"])
            for i in range(n)}


async def rabbitmqctl(command: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl", command, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(proc.communicate(), WAIT)
    assert 0 == proc.returncode, err.decode()


async def test_a_relay_killed_before_mark_sent_resends_and_participants_apply_each_command_once(
        trip: Trip) -> None:
    sagas = plans(20, "resent")
    consumers = await trip.spawn("sagas,flights,hotels,payments")
    await trip.start(sagas)
    first_commands = sorted(i for i, _, m, _ in trip.outbox())

    killed = await trip.spawn("relay", KILL_AFTER_SEND="1")
    code, out = await killed.exit()
    assert KILLED == code, killed.log.read_text()
    assert f"batch {json.dumps(first_commands)}\n" == out  # confirmed by the broker...
    assert {i: None for i in first_commands} == {  # ...and not marked sent
        i: sent for i, _, _, sent in trip.outbox() if i in first_commands}

    relay = await trip.spawn("relay")
    await trip.settled(list(sagas))
    await trip.until(  # the dead relay's claim on them lapses (its lease), then they go again
        lambda: all(sent is not None for i, _, _, sent in trip.outbox() if i in first_commands),
        lambda: "the killed relay's batch was never sent again")
    await relay.stop()
    await consumers.stop()

    trip.assert_ended_right(sagas)
    resent = {m["message_id"] for i, _, m, _ in trip.outbox() if i in first_commands}
    assert {m: [True, False] if m in resent else [True] for m in trip.sent_commands()} == \
        trip.applications()


async def test_a_participant_killed_between_commit_and_ack_gets_the_command_again_applies_it_once(
        trip: Trip) -> None:
    sagas = plans(10, "acked")
    rest = await trip.spawn("sagas,relay,hotels,payments")
    doomed = await trip.spawn("flights", KILL_AFTER_APPLY="flights")
    await trip.start(sagas)
    code, _ = await doomed.exit()
    assert KILLED == code, doomed.log.read_text()
    (killed,) = [c for c in map(json.loads, trip.calls.read_text().splitlines())
                 if c["pid"] == doomed.pid]
    assert (True, "flights") == (killed["applied"], killed["participant"])

    flights = await trip.spawn("flights")
    await trip.settled(list(sagas))
    await flights.stop()
    await rest.stop()

    trip.assert_ended_right(sagas)
    assert {m: [True, False] if m == killed["message_id"] else [True]
            for m in trip.sent_commands()} == trip.applications()


@pytest.mark.restarts_broker
async def test_sagas_running_while_the_broker_restarts_all_end_with_exactly_their_commands(
        trip: Trip) -> None:
    before, during = plans(25, "before", seed=1), plans(25, "during", seed=2)
    server = await trip.spawn(ALL, HANDLER_DELAY="0.5")  # slow enough to be caught mid-way
    await trip.start(before)
    await trip.until(lambda: set(trip.states(before).values()) != {"booking_flight"},
                     lambda: "no saga moved")  # now replies and commands are in flight
    try:
        await rabbitmqctl("stop_app")
        await trip.start(during)  # their first commands wait in the outbox for the broker
    finally:
        await rabbitmqctl("start_app")
    await trip.settled([*before, *during])
    await server.stop()  # it served through the restart: exits 0

    trip.assert_ended_right({**before, **during})
    assert {m: 1 for m in trip.sent_commands()} == \
        {m: applied.count(True) for m, applied in trip.applications().items()}


@pytest.mark.restarts_broker
async def test_a_broker_down_longer_than_the_reconnect_timeout_does_not_stop_the_relay(
        trip: Trip) -> None:
    server = await trip.spawn(ALL, RECONNECT_TIMEOUT="0.5")
    try:
        await rabbitmqctl("stop_app")
        await trip.start({"patient": None})
        await asyncio.sleep(2.0)  # the relay tries to send BookFlight for longer than 0.5 s
    finally:
        await rabbitmqctl("start_app")
    await trip.settled(["patient"])
    await server.stop()
    trip.assert_ended_right({"patient": None})


async def test_a_timer_due_while_no_process_ran_fires_in_a_fresh_process_which_compensates(
        trip: Trip) -> None:
    first = await trip.spawn("sagas,relay", TRIP_TIMEOUT="2")  # nobody answers BookFlight
    await trip.start({"late": None}, timeout=2.0)
    await trip.until(lambda: trip.outbox()[0][3] is not None, lambda: "BookFlight not sent")
    await first.kill()
    assert [(None, "booking_flight", "start")] == trip.history()  # it waits, nothing fired

    (wake_at,) = trip.query("SELECT wake_at FROM sagas WHERE saga_id = 'late'")[0]
    await asyncio.sleep(max(wake_at - time.time(), 0) + 0.1)  # due before the fresh one runs
    fresh = await trip.spawn(ALL, TRIP_TIMEOUT="2")
    book = trip.outbox()[0][2]["message_id"]
    await trip.settled(["late"], unapplied=[book])  # BookFlight found no participant's queue
    await fresh.stop()

    assert [(None, "booking_flight", "start"),
            ("booking_flight", "compensating_booking_flight", "timeout"),
            ("compensating_booking_flight", "compensating_booking_flight", "sent"),
            ("compensating_booking_flight", "compensated", "FlightCancelled")] == trip.history()
    (worker,) = trip.query("SELECT worker FROM transitions WHERE event = 'timeout'")[0]
    assert f":{fresh.pid}:" in worker  # the fresh process fired it
    assert ["BookFlight", "CancelFlight"] == trip.commands("late")
    (cancel,) = [m["message_id"] for _, _, m, _ in trip.outbox() if m["type"] == "CancelFlight"]
    assert {cancel: [True]} == trip.applications()
