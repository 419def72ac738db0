"""One saga in this process: its position under the rules, and what it needs to go on."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from . import kernel
from .context import StepContext
from .definition import SagaStateMachine
from .logs import logger as _log
from .records import Kind, SagaRecord, SagaStatus, Transition, status_of


class SagaRun:
    """One saga in this process: its position, data, results and history as committed."""

    __slots__ = (
        "abort",
        "created_at",
        "data",
        "deadline_at",
        "definition",
        "entered_at",
        "fence",
        "graph",
        "history",
        "interruptible",
        "lock",
        "log",
        "lost",
        "outbox",
        "pending",
        "pos",
        "queued",
        "results",
        "revision",
        "saga_id",
        "state",
        "stored_data",
    )

    def __init__(self, definition: SagaStateMachine, record: SagaRecord) -> None:
        self.definition = definition
        self.graph = definition.graph
        self.saga_id = record.saga_id
        self.data: Any = MappingProxyType(dict(record.data))
        self.stored_data = record.data  # what the store keeps (JSON), for the record
        if definition.data_type is not None:  # typed data (statesaga.typed): ctx.data typed
            self.data = definition.data_type.load(record.data, f"the data of saga "
                                                  f"{record.saga_id!r}", saga_id=record.saga_id)
        self.results: dict[str, Any] = dict(record.results)
        self.history = list(record.history)
        self.revision = record.revision
        self.fence = record.fence
        self.created_at = record.created_at
        self.deadline_at = None if record.deadline_at is None else record.deadline_at.timestamp()
        self.pending = record.status is SagaStatus.PENDING
        self.abort: str | None = None
        self.interruptible = False
        self.outbox: list[Any] = []  # messages published for the next commit
        self.lock: asyncio.Lock | None = None  # while a group's branches commit one by one
        self.lost = False  # its lease was found lost: this process stops driving it
        self.queued = 0  # outside events queued for it (the store said, at the last commit)
        self.log: Any = _log.bind(saga_id=record.saga_id, saga=definition.name)
        self.pos = kernel.replay(self.graph, self.history)._replace(error=record.error)
        self.state = self.pos.state  # the same as pos.state: read on every turn of the loop
        self.entered_at = _entered(self.history, record.created_at)

    def context(self, step: str, *, attempt: int = 1, result: Any = None, event: Any = None,
                outbox: list[Any] | None = None) -> StepContext:
        """The context one call of the saga's code gets; what it publishes joins the commit
        (the saga's, or a branch's own `outbox`)."""
        return StepContext(self.saga_id, step, self.data, self.results, attempt=attempt,
                           result=result, name=self.definition.name,
                           outbox=self.outbox if outbox is None else outbox, event=event,
                           fence=self.fence)

    def apply(self, move: kernel.Move, transition: Transition, at: float) -> None:
        """Take a committed move: the saga is where the store says it is."""
        if move.dest != move.source or move.edge is not None:
            self.entered_at = at
        self.pos = move.after
        self.state = move.dest
        self.history.append(transition)
        self.outbox = []

    def record(self) -> SagaRecord:
        updated = self.history[-1].at if self.history else self.created_at
        return SagaRecord(
            saga_id=self.saga_id, name=self.definition.name, version=self.definition.version,
            state=self.pos.state, status=status_of(self.pos.state, self.pending),
            data=dict(self.stored_data), results=dict(self.results), error=self.pos.error,
            history=tuple(self.history), created_at=self.created_at, updated_at=updated,
            revision=self.revision, fence=self.fence,
            deadline_at=None if self.deadline_at is None else
            datetime.fromtimestamp(self.deadline_at, UTC))


def _entered(history: list[Transition], created: datetime) -> float:
    """When the saga entered its current state (retries and ignored events stay in it)."""
    for t in reversed(history):
        if t.kind is not Kind.RETRY and t.kind is not Kind.IGNORED:
            return t.at.timestamp()
    return created.timestamp()
