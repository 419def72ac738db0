"""Participants of a choreography: services that handle commands and reply with events.

A participant keeps its state per saga in the saga store's database; handling one command
(its new state, the command's message id in the inbox, its replies in the outbox) is one
transaction, so a redelivered command is applied once. A command found in the inbox is not
handled again: the handler's code runs once per message, unless two copies arrive at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from . import telemetry
from .events import Event, EventBus
from .exceptions import DuplicateMessage, UndeliverableEvent
from .logs import logger as _log
from .stores.base import ParticipantStore

Reply = Event | Sequence[Event] | None
CommandHandler = Callable[[Event, dict[str, Any]], Reply | Awaitable[Reply]]


class Participant:
    """A service in a choreography. Handlers get `(command, state)`, change `state` (a dict
    kept for this saga) in place, and return the reply event(s).

    Replies are written to the store's outbox with the state, and reach the bus only through
    a relay of that store: `serve` runs one. When replies wait longer than `warn_unsent`
    seconds, a warning says so (the sagas waiting for them would wait forever)."""

    def __init__(self, name: str, store: ParticipantStore, *,
                 warn_unsent: float = 10.0) -> None:
        self.name = name
        self.store = store
        self.handlers: dict[str, tuple[CommandHandler, tuple[str, ...]]] = {}
        self.warn_unsent = warn_unsent
        self._watch: asyncio.Task[None] | None = None

    def on(self, command: str, *, emits: Sequence[str] = ()
           ) -> Callable[[CommandHandler], CommandHandler]:
        """Decorator: handle `command`; `emits` declares the events it may reply with."""
        def register(func: CommandHandler) -> CommandHandler:
            self.handlers[command] = (func, tuple(emits))
            return func
        return register

    @property
    def emits(self) -> set[str]:
        return {e for _, emits in self.handlers.values() for e in emits}

    async def handle(self, command: Event) -> bool:
        """Apply one command; False if it was applied before (a duplicate delivery)."""
        if not command.correlation_id:
            raise UndeliverableEvent(f"command {command.type!r} (message {command.message_id}) "
                                     "has no correlation_id")
        with telemetry.consume(command, f"handle {command.type}"):  # telemetry
            return await self._handle(command)

    async def _handle(self, command: Event) -> bool:
        func, _ = self.handlers[command.type]
        key = command.correlation_id
        assert key is not None  # `handle` refused a command without one
        try:
            state = await self.store.participant_state(
                self.name, key, message_id=command.message_id) or {}
        except DuplicateMessage:  # applied before: its handler does not run again
            _log.info("participant.duplicate", participant=self.name, type=command.type,
                      message_id=command.message_id)
            return False
        reply = func(command, state)
        if inspect.isawaitable(reply):
            reply = await reply
        replies = [] if reply is None else [reply] if isinstance(reply, Event) else list(reply)
        replies = [attrs.evolve(r, correlation_id=r.correlation_id or key,
                                causation_id=r.causation_id or command.message_id)
                   for r in replies]
        applied = await self.store.participant_apply(  # the final guard: two copies at once
            self.name, key, command.message_id, state, replies)
        if not applied:
            _log.info("participant.duplicate", participant=self.name, type=command.type,
                      message_id=command.message_id)
        elif replies and (self._watch is None or self._watch.done()):
            self._watch = asyncio.ensure_future(self._unsent_after(self.warn_unsent))
        return applied

    async def _unsent_after(self, wait: float) -> None:
        """Warn if replies written `wait` seconds ago (or before) are still in the outbox."""
        await asyncio.sleep(wait)
        stats = getattr(self.store, "outbox_stats", None)
        if stats is None:
            return
        with contextlib.suppress(Exception):  # a warning only: never fail the participant
            found = await stats()
            oldest = found.oldest_unsent_at
            if oldest is not None and time.time() - oldest.timestamp() >= wait:
                _log.warning(
                    "participant.replies_unsent", participant=self.name, unsent=found.unsent,
                    waited_s=round(time.time() - oldest.timestamp(), 1),
                    fix="nothing relays this participant's store: run "
                        "`await participant.serve(bus, stop)`, or a relay "
                        "(`Choreography(Orchestrator(store=its_store), bus).relay(stop=stop)`); "
                        "the sagas waiting for these replies wait until then")

    async def serve(self, bus: EventBus, stop: asyncio.Event, *, poll: float = 0.05) -> None:
        """Until `stop`: handle this participant's commands from `bus`, and relay its replies
        (its store's outbox) to it. Participants sharing a store need one relay between them:
        `listen` each, and `serve` one (or run `Choreography.relay`)."""
        from .choreography import Choreography
        from .orchestrator import Orchestrator

        await self.listen(bus)
        relay = Choreography(Orchestrator(store=self.store), bus)  # type: ignore[arg-type]
        try:
            await relay.relay(poll=poll, stop=stop)
        finally:
            if self._watch is not None:  # its relay ran: nothing to warn about
                self._watch.cancel()

    async def listen(self, bus: EventBus) -> None:
        """Subscribe to every command this participant handles (one group per participant)."""
        for command in self.handlers:
            await bus.subscribe(command, self.handle, group=self.name)
