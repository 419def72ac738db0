"""The saga's records: its coarse status, one transition of its history, and the saga itself."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

COMPLETED = "completed"
COMPENSATED = "compensated"
FAILED = "failed"
TERMINALS = (COMPLETED, COMPENSATED, FAILED)
MIRROR_PREFIX = "compensating_"


class SagaStatus(enum.Enum):
    """Where a saga stands, coarsely: for queries and dashboards."""

    PENDING = "pending"
    RUNNING = "running"
    COMPENSATING = "compensating"
    COMPLETED = "completed"
    COMPENSATED = "compensated"
    FAILED = "failed"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_STATUSES


_TERMINAL_STATUSES = frozenset(
    {SagaStatus.COMPLETED, SagaStatus.COMPENSATED, SagaStatus.FAILED}
)


def status_of(state: str, pending: bool = False) -> SagaStatus:
    """The coarse status of a saga in `state`."""
    if state == COMPLETED:
        return SagaStatus.COMPLETED
    if state == COMPENSATED:
        return SagaStatus.COMPENSATED
    if state == FAILED:
        return SagaStatus.FAILED
    if state.startswith(MIRROR_PREFIX):
        return SagaStatus.COMPENSATING
    return SagaStatus.PENDING if pending else SagaStatus.RUNNING


@attrs.frozen
class Transition:
    """One move of a saga: the outcome of one attempt of `step`, taking it from `source` to `dest`.

    `source` is None for the transition that starts the saga. `duration` is the attempt's
    duration in seconds (None when nothing ran, e.g. an operator's abort). `worker` is the
    id (the `owner`) of the orchestrator or worker that wrote it; None for rows written
    before it was recorded, for a pending saga's start, and for operators' writes.
    """

    at: datetime
    source: str | None
    dest: str
    event: str
    step: str | None = None
    attempt: int | None = None
    error: str | None = None
    duration: float | None = None
    reason: str | None = None
    worker: str | None = None


@attrs.frozen
class SagaRecord:
    """One saga instance as stored: its state, shared data, step results and history.

    `fence` grows with every claim of the saga (1 at its creation): a number to pass to
    services beside the idempotency key, so they can refuse a writer that lost its lease.
    """

    saga_id: str
    name: str
    version: str
    state: str
    status: SagaStatus
    data: Mapping[str, Any]
    results: Mapping[str, Any]
    error: str | None
    history: tuple[Transition, ...]
    created_at: datetime
    updated_at: datetime
    revision: int = 0
    deadline_at: datetime | None = None
    fence: int = 0

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal

    @property
    def is_stuck(self) -> bool:
        """A compensation gave up: a person must fix the cause, then `retry` the saga."""
        return self.status is SagaStatus.FAILED

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """Jupyter shows the saga's path on its machine's diagram (its timeline if unknown)."""
        from .definition import KNOWN
        from .timeline import format_timeline

        machine = KNOWN.get((self.name, self.version))
        if machine is None:
            return {"text/plain": format_timeline(self)}
        from .diagrams import mimebundle

        return mimebundle(machine, self) | {"text/plain": format_timeline(self)}
