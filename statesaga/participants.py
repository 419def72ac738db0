"""Participants of a choreography: services that handle commands and reply with events.

A participant keeps its state per saga in the saga store's database; handling one command
(its new state, the command's message id in the inbox, its replies in the outbox) is one
transaction, so a redelivered command is applied once. A command found in the inbox is not
handled again: the handler's code runs once per message, unless two copies arrive at once.

The replies leave through the outbox of the participant's store: something must relay it
(the saga's relay when the participant shares the saga's store, its own otherwise). A
participant whose replies still wait there `unsent_warning` seconds later says so, once: the
sagas waiting for those replies would otherwise wait forever, with no error.
"""

from __future__ import annotations

import asyncio
import inspect
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
UNSENT_WARNING = 30.0
"""Seconds a participant's replies may wait in its store's outbox before it warns."""


class Participant:
    """A service in a choreography. Handlers get `(command, state)`, change `state` (a dict
    kept for this saga) in place, and return the reply event(s)."""

    def __init__(self, name: str, store: ParticipantStore, *,
                 unsent_warning: float | None = UNSENT_WARNING) -> None:
        self.name = name
        self.store = store
        self.handlers: dict[str, tuple[CommandHandler, tuple[str, ...]]] = {}
        self.unsent_warning = unsent_warning  # None: never warn
        self._timer: asyncio.TimerHandle | None = None
        self._checking: asyncio.Task[None] | None = None
        self._warned = False

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
        elif replies:
            self._watch_outbox(min(r.timestamp for r in replies))
        return applied

    def _watch_outbox(self, written: float) -> None:
        """Look at the outbox `unsent_warning` s after replies written at `written` (epoch s).

        A timer, not a sleeping task: a loop that closes before it fires drops it quietly.
        """
        if self.unsent_warning is None or self._warned or self._timer is not None:
            return
        loop = asyncio.get_running_loop()

        def check() -> None:
            self._timer = None
            self._checking = loop.create_task(self._warn_if_unsent(written))

        self._timer = loop.call_later(self.unsent_warning, check)

    async def _warn_if_unsent(self, written: float) -> None:
        stats = getattr(self.store, "outbox_stats", None)
        if stats is None:  # a store that cannot say: nothing to warn about
            return
        try:
            backlog = await stats()
        except Exception:  # a store that cannot say now: its own errors show elsewhere
            return
        oldest = backlog.oldest_unsent_at
        assert self.unsent_warning is not None
        # Still unsent half the period after these replies were written: nothing relays
        # (a relay at work sends within its poll). The margin covers the store's clock.
        if backlog.unsent and (
                oldest is None or oldest.timestamp() < written + self.unsent_warning / 2):
            self._warned = True
            _log.warning(
                "participant.replies_unsent", participant=self.name, unsent=backlog.unsent,
                fix=f"participant {self.name!r}'s replies have waited over "
                    f"{self.unsent_warning:g}s in its store's outbox: run a relay on that "
                    "store (`await participant.serve(bus, stop)`, or "
                    "`Choreography(Orchestrator(store=...), bus).relay()`), "
                    "or the sagas waiting for them wait forever")

    async def serve(self, bus: EventBus, stop: asyncio.Event, *, poll: float = 0.05) -> None:
        """Until `stop`: handle this participant's commands from `bus`, and relay its replies
        (its store's outbox) to it. Participants sharing a store need one relay between them:
        `listen` each, and `serve` one (or run `Choreography.relay`)."""
        from .choreography import Choreography
        from .orchestrator import Orchestrator

        await self.listen(bus)
        relay = Choreography(Orchestrator(store=self.store), bus)  # type: ignore[arg-type]
        await relay.relay(poll=poll, stop=stop)

    async def listen(self, bus: EventBus) -> None:
        """Subscribe to every command this participant handles (one group per participant)."""
        for command in self.handlers:
            await bus.subscribe(command, self.handle, group=self.name)
