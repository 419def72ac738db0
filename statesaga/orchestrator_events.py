"""Outside events: how `Orchestrator.send` reaches a saga wherever it is.

A saga waiting here (parked) takes the event with one commit; one in the store is claimed
and takes it; one another worker drives right now gets it durably queued (`EventQueue`)
and applied, in order, by whoever drives it when it next waits or ends. Either way the
event is applied once (by `message_id`), and `send` returns the saga as it then stands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from . import kernel
from .codec import to_json
from .events import Event
from .exceptions import (
    DuplicateMessage,
    LeaseHeld,
    RevisionConflict,
    SagaError,
    SagaNotFound,
    UndeliverableEvent,
    describe,
)
from .graph import RESERVED_EVENTS
from .logs import logger as _log
from .records import TERMINALS, SagaRecord
from .saga_run import SagaRun
from .stores.base import store_time

if TYPE_CHECKING:
    from .orchestrator import Orchestrator

POLL = (0.01, 0.02, 0.05, 0.1, 0.2)  # then every 0.2 s: a queued event waiting its turn


async def send(orch: Orchestrator, saga_id: str, event: str | Event,
               payload: Mapping[str, Any] | None = None, *,
               message_id: str | None = None) -> SagaRecord:
    """`Orchestrator.send`: see there."""
    if isinstance(event, str):
        event = Event(event, dict(payload or {}), correlation_id=saga_id)
    if message_id is not None and message_id != event.message_id:
        event = attrs.evolve(event, message_id=message_id)
    if event.type in RESERVED_EVENTS:
        raise UndeliverableEvent(
            f"event {event.type!r} is reserved (statesaga fires it itself): use "
            "`abort` or `retry` for those", saga_id=saga_id)
    active = orch._active.get(saga_id)
    if active is not None:  # this process drives it right now: let that finish first
        await asyncio.shield(active[1])
    parked = orch._parked.pop(saga_id, None)
    if parked is not None:  # no claim, no load: the commit's revision check guards it
        try:
            moved = await orch._runner.deliver(parked, event, inbox=event.message_id,
                                               error=reason(event))
        except DuplicateMessage:
            return await orch.store.load(saga_id)
        except RevisionConflict:
            pass  # it moved elsewhere meanwhile: load it afresh below
        else:
            return await orch._drive(parked, resumed=not moved)
    record = await _loaded(orch, saga_id, event)
    if record.is_terminal:
        run = SagaRun(orch.definition(record), record)
        with contextlib.suppress(DuplicateMessage):
            await orch._runner.deliver(run, event, inbox=event.message_id)
        return await orch.store.load(saga_id)
    try:
        run = await orch._take(record)
    except LeaseHeld:  # another worker drives it: queue the event for it, durably
        return await _queue(orch, record, event)
    try:
        moved = await orch._runner.deliver(run, event, inbox=event.message_id,
                                           error=reason(event))
    except DuplicateMessage:
        await orch.store.release(orch.owner, [saga_id])
        _log.info("saga.duplicate_event", saga_id=saga_id, message_id=event.message_id)
        return await orch.store.load(saga_id)
    except BaseException:
        await orch.store.release(orch.owner, [saga_id])
        raise
    # unchanged state: a step or compensation in it may have been cut off by a dead process
    return await orch._drive(run, resumed=not moved)


async def _loaded(orch: Orchestrator, saga_id: str, event: Event) -> SagaRecord:
    """The saga an event is for, refused before any claim if it cannot take it here."""
    try:
        record = await orch.store.load(saga_id)
    except SagaNotFound:
        raise UndeliverableEvent(
            f"event {event.type!r} (message {event.message_id}) is for saga {saga_id!r}, "
            "which does not exist", saga_id=saga_id) from None
    orch.definition(record)  # SagaNotRegistered: another type's saga is never seized
    return record


async def _queue(orch: Orchestrator, record: SagaRecord, event: Event) -> SagaRecord:
    """Queue `event` for the worker that drives the saga; wait until it took it."""
    saga_id, store = record.saga_id, orch.store
    payload = to_json(dict(event.payload), f"the payload of event {event.type!r}",
                      saga_id=saga_id, root="payload")
    await store.enqueue_event(saga_id, event.message_id, event.type, payload,
                              now=store_time(orch.clock))
    _log.info("saga.event_queued", saga_id=saga_id, trigger=event.type,
              message_id=event.message_id)
    for turn in range(1_000_000):
        queued = await store.queued_events(saga_id)
        if all(q.message_id != event.message_id for q in queued):
            return await store.load(saga_id)
        await orch.clock.sleep(POLL[min(turn, len(POLL) - 1)])
        if turn % 25 == 24:  # its worker may have died meanwhile: a claim then takes it
            with contextlib.suppress(LeaseHeld):
                run = await orch._take(await store.load(saga_id))
                return await orch._drive(run, resumed=True)
    raise AssertionError("unreachable")  # pragma: no cover


async def apply_queued(orch: Orchestrator, run: SagaRun) -> bool:
    """Apply the outside events queued for `run` (it waits or ended), oldest first; True if
    any was (the saga may have moved: drive it on)."""
    applied = 0
    for q in await orch.store.queued_events(run.saga_id):
        if not (kernel.waits(run.graph, run.pos) or run.state in TERMINALS):
            break  # it runs a step now: drive it; the rest waits for its next wait
        event = Event(q.type, q.payload, correlation_id=run.saga_id, message_id=q.message_id)
        try:
            await orch._runner.deliver(run, event, inbox=q.message_id, error=reason(event),
                                       consumed=q.seq)
        except DuplicateMessage:  # applied before: only take it off the queue
            await orch._runner.commit(run, kernel.ignore(run.pos, q.type), consumed=q.seq,
                                      reason=f"ignored: message {q.message_id} was "
                                             "delivered before")
        except SagaError:
            raise  # the store or the lease: the event stays queued for the next driver
        except Exception as exc:  # a guard or hook rejected it: recorded, off the queue
            _log.warning("saga.event_rejected", saga_id=run.saga_id, trigger=q.type,
                         error=describe(exc))
        applied += 1
    run.queued = 0
    return applied > 0


def reason(event: Event) -> str | None:
    """A failure event's reason (`payload["reason"]` or `["error"]`), for the saga's error."""
    found = event.payload.get("reason", event.payload.get("error"))
    return None if found is None else f"{event.type}: {found}"
