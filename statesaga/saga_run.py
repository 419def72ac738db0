"""One saga in this process: the model its definition's shared machine moves.

Which mirror state a failure leads to is decided by `undo`: the compensable states whose
effect may exist, in the order they happened, derived from the history.
"""

from __future__ import annotations

from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import structlog

from .context import StepContext
from .definition import SagaStateMachine
from .graph import FAILURE, FORWARD, MIRROR, UNKNOWN, Graph
from .records import SagaRecord, SagaStatus, status_of

_log = structlog.get_logger("statesaga")


class SagaRun:
    """One saga in this process: the model its machine moves, and what it needs to go on."""

    __slots__ = ("abort", "cause", "created_at", "data", "deadline_at", "definition", "error",
                 "fence", "history", "interruptible", "log", "outbox", "pending", "results",
                 "revision", "saga_id", "state", "target", "undo")

    def __init__(self, definition: SagaStateMachine, record: SagaRecord) -> None:
        self.definition = definition
        self.saga_id = record.saga_id
        self.state = record.state
        self.target: str | None = None
        self.data = MappingProxyType(dict(record.data))
        self.results: dict[str, Any] = dict(record.results)
        self.history = list(record.history)
        self.revision = record.revision
        self.fence = record.fence
        self.error = record.error
        self.created_at = record.created_at
        self.deadline_at = None if record.deadline_at is None else record.deadline_at.timestamp()
        self.pending = record.status is SagaStatus.PENDING
        self.abort: str | None = None
        self.interruptible = False
        self.undo: list[str] = []
        self.cause: str | None = None
        self.outbox: list[Any] = []  # messages published by hooks, for the next commit
        self.log: Any = _log.bind(saga_id=record.saga_id, saga=definition.name)
        graph = definition.graph
        for t in self.history:
            kind = graph.kinds.get((t.source or "", t.event, t.dest))
            if kind is not None:
                move_undo(graph, self.undo, t.source or "", kind)
                if kind in (FAILURE, UNKNOWN):
                    self.cause = t.error

    def hook_context(self) -> StepContext:
        """The context a hook of this saga gets: messages it publishes join the commit."""
        return StepContext(self.saga_id, self.state, self.data, self.results,
                           name=self.definition.name, outbox=self.outbox)

    def record(self) -> SagaRecord:
        updated = self.history[-1].at if self.history else self.created_at
        return SagaRecord(
            saga_id=self.saga_id, name=self.definition.name, version=self.definition.version,
            state=self.state, status=status_of(self.state, self.pending), data=dict(self.data),
            results=dict(self.results), error=self.error, history=tuple(self.history),
            created_at=self.created_at, updated_at=updated, revision=self.revision,
            fence=self.fence,
            deadline_at=None if self.deadline_at is None else
            datetime.fromtimestamp(self.deadline_at, UTC))


def move_undo(graph: Graph, undo: list[str], source: str, kind: str) -> None:
    """How one transition of `kind` out of `source` changes the undo stack."""
    if kind in (FORWARD, UNKNOWN):
        if graph.compensable(source):
            undo.append(source)
    elif kind == MIRROR:
        undo.pop()
