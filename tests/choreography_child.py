"""A child process for tests/test_choreography_crash.py: serves parts of the trip choreography.

    python tests/choreography_child.py ROLES DB RABBITMQ_URL PREFIX

ROLES is a comma-separated list of what this process runs, against the SQLite file DB and the
RabbitMQ exchange PREFIX (queues `PREFIX.*`):
    sagas     the trip's machine: listens to the replies, fires due timers (`Orchestrator.work`)
    relay     sends the outbox to the bus (`Choreography.relay`)
    flights, hotels, payments    the participants of that name

It prints "ready" once its subscriptions exist, runs until SIGTERM, then closes its bus and
store and exits 0; SIGUSR1 prints every task's stack to stderr. Environment:
    TRIP_TIMEOUT=s       the states' timeout (default 30)
    LEASE=s              the orchestrator's lease (default 0.5)
    CALLS=path           append one JSON line per `participant_apply`, and per duplicate that
                         `participant_state` found in the inbox: who, which message, applied
    HANDLER_DELAY=s      participants sleep that long before handling a command
    RECONNECT_TIMEOUT=s  the bus's reconnect_timeout (default 30)
    KILL_AFTER_SEND=1    the relay prints "batch <outbox ids>" and SIGKILLs itself once the bus
                         confirmed its first batch, before `mark_sent`
    KILL_AFTER_APPLY=p   participant p SIGKILLs the process after its first application
                         committed (`participant_apply` returned True), before the ack
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import structlog

from statesaga import Orchestrator, RabbitMQBus, SQLiteStore
from statesaga.choreography import Choreography
from statesaga.events import Event
from statesaga.examples.trip_choreography import build_participants, build_trip_choreography
from statesaga.exceptions import DuplicateMessage
from statesaga.participants import CommandHandler, Participant


def dump_tasks() -> None:
    """On SIGUSR1: where every task waits, awaited coroutines included, to stderr."""
    for task in asyncio.all_tasks():
        print(f"--- {task!r}", file=sys.stderr)
        awaited: Any = task.get_coro()
        while awaited is not None:
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                print(f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}",
                      file=sys.stderr)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
            if awaited is not None and not (hasattr(awaited, "cr_frame")
                                            or hasattr(awaited, "gi_frame")):
                print(f"    awaits {awaited!r}"[:300], file=sys.stderr)
                break
    sys.stderr.flush()


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught


class HookedStore:
    """Passes everything to `store`; logs participants' applications and dies where told."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        self.url = store.url
        calls = os.environ.get("CALLS")  # appended to by several processes: a line per write
        self._calls = None if calls is None else open(calls, "a", buffering=1)  # noqa: SIM115
        self._kill_after_send = os.environ.get("KILL_AFTER_SEND") == "1"
        self._kill_after_apply = os.environ.get("KILL_AFTER_APPLY")

    async def mark_sent(self, ids: Sequence[int]) -> None:
        if self._kill_after_send:  # the bus confirmed every message of the batch
            print("batch", json.dumps(list(ids)), flush=True)
            die()
        await self._store.mark_sent(ids)

    async def participant_state(self, participant: str, key: str, *,
                                message_id: str | None = None) -> Any:
        try:
            return await self._store.participant_state(participant, key, message_id=message_id)
        except DuplicateMessage:  # found in the inbox: its handler does not run
            self._note(participant, key, message_id, False)
            raise

    async def participant_apply(self, participant: str, key: str, message_id: str,
                                state: dict[str, Any], messages: Sequence[Any]) -> bool:
        applied = await self._store.participant_apply(participant, key, message_id, state,
                                                      messages)
        self._note(participant, key, message_id, applied)
        if applied and participant == self._kill_after_apply:  # committed, not acked
            die()
        return applied

    def _note(self, participant: str, key: str, message_id: str | None, applied: bool) -> None:
        if self._calls is not None:
            line = json.dumps({"participant": participant, "saga_id": key,
                               "message_id": message_id, "applied": applied,
                               "pid": os.getpid()})
            self._calls.write(line + "\n")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def slowed(func: CommandHandler, delay: float) -> CommandHandler:
    async def handler(event: Event, state: dict[str, Any]) -> Any:
        await asyncio.sleep(delay)
        return func(event, state)

    return handler


def participants(store: HookedStore) -> list[Participant]:
    out = build_participants(store)
    delay = float(os.environ.get("HANDLER_DELAY", "0"))
    if delay:
        for p in out:
            p.handlers = {c: (slowed(f, delay), emits) for c, (f, emits) in p.handlers.items()}
    return out


async def serve(roles: set[str], db: str, url: str, prefix: str) -> None:
    store = HookedStore(SQLiteStore(db, durability="normal"))
    bus = RabbitMQBus(url, exchange=prefix, prefix=prefix,
                      reconnect_timeout=float(os.environ.get("RECONNECT_TIMEOUT", "30")))
    machine = build_trip_choreography(timeout=float(os.environ.get("TRIP_TIMEOUT", "30")))
    orch = Orchestrator(store=store,  # type: ignore[arg-type]
                        sagas=[machine], lease=float(os.environ.get("LEASE", "0.5")))
    choreography = Choreography(orch, bus)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks)
    for participant in participants(store):
        if participant.name in roles:
            await participant.listen(bus)
    if "sagas" in roles:
        await choreography.listen([machine])
    print("ready", flush=True)
    work: list[Any] = [stop.wait()]
    if "relay" in roles:
        work.append(choreography.relay(poll=0.02, stop=stop))
    if "sagas" in roles:
        work.append(orch.work(poll=0.05, stop=stop))
    await asyncio.gather(*work)
    await bus.close()
    await store.close()
    print("stopped", flush=True)


def main(argv: list[str]) -> int:
    roles, db, url, prefix = argv
    structlog.configure(  # warnings to stderr (the parent keeps it in a file); stdout is ours
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        processors=[structlog.processors.add_log_level,
                    structlog.dev.ConsoleRenderer(colors=False)],
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr))
    asyncio.run(serve(set(roles.split(",")), db, url, prefix))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
