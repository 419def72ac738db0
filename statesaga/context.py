"""What an action, a compensation, a guard or a hook receives: the saga's context for one call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .logs import logger as _log


class StepContext:
    """The saga's view for one attempt of one step, or one hook or guard call.

    `idempotency_key` is `"<saga_id>:<step>"`, the same in the action and in its
    compensation, so an undo can find what was done even when no result came back.
    `result` is, in a compensation, what the action returned (None if its outcome is
    unknown). `data` is the saga's input, read-only: share outputs by returning them.
    `event` is the event being handled (in guards and hooks of an event's transition).
    `fence` grows with every claim of the saga: pass it with the idempotency key, so a
    service can refuse a stalled worker's late call (a lower fence than one it has seen).
    """

    __slots__ = ("_log", "attempt", "data", "event", "fence", "name", "outbox", "result",
                 "results", "saga_id", "step")

    def __init__(
        self,
        saga_id: str,
        step: str,
        data: Any,
        results: Mapping[str, Any],
        *,
        attempt: int = 1,
        result: Any = None,
        name: str = "",
        outbox: list[Any] | None = None,
        event: Any = None,
        fence: int = 0,
    ) -> None:
        self.saga_id = saga_id
        self.step = step
        self.data = data
        self.results = results
        self.attempt = attempt
        self.result = result
        self.name = name
        self.outbox = outbox
        self.event = event
        self.fence = fence
        self._log: Any = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.saga_id}:{self.step}"

    @property
    def log(self) -> Any:
        """A structlog logger bound to this saga and step (bound on first use)."""
        if self._log is None:
            self._log = _log.bind(saga_id=self.saga_id, saga=self.name, step=self.step)
        return self._log

    def publish(self, event: Any) -> None:
        """Queue a message to leave with this transition's commit (transactional outbox)."""
        if self.outbox is None:
            raise RuntimeError(
                f"step {self.step!r} of saga {self.saga_id!r} cannot publish here: messages "
                "are published from hooks of a saga run by an Orchestrator or choreography"
            )
        self.outbox.append(event)

    def __repr__(self) -> str:
        return (f"StepContext(saga_id={self.saga_id!r}, step={self.step!r}, "
                f"attempt={self.attempt}, fence={self.fence})")
