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


class Kind(enum.StrEnum):
    """What a transition means for the saga's undo stack (stored with it, as its text)."""

    START = "start"  # the saga was created in its initial state
    FORWARD = "forward"  # the source completed: it is undone if the saga fails later
    FAILURE = "failure"  # the source did not happen: walk back from the last completed
    UNKNOWN = "unknown"  # the source may have happened (timeout, crash, abort): undo it too
    MIRROR = "mirror"  # a compensation succeeded: walk on back
    STUCK = "stuck"  # a compensation gave up: the saga needs a person
    RESUME = "resume"  # a person retries the stuck compensation
    RETRY = "retry"  # another attempt in the same state
    IGNORED = "ignored"  # an event with no transition from the state: recorded, no move
    LANE = "lane"  # one branch of a parallel group succeeded (or was undone): the group waits


class Trigger(enum.StrEnum):
    """The events statesaga fires itself; a user's transition may use only `succeed`."""

    START = "start"
    SUCCEED = "succeed"
    FAIL = "fail"
    TIMEOUT = "timeout"
    ABORT = "abort"
    RETRY = "retry"
    RETRY_UNKNOWN = "retry_unknown"
    INVALID_RESULT = "invalid_result"  # the action ran, its result cannot be stored
    NO_ROUTE = "no_route"  # the action ran, no guarded transition out of it accepted it
    HOOK_FAILED = "hook_failed"  # the action ran, a hook of the move after it raised
    SENT = "sent"  # a compensating command went out: its state waits for the reply
    REVERT = "revert"  # a completed saga is undone (a parent compensating its sub-saga)
    GIVE_UP = "give_up"  # its write refused, or statesaga failed on it: failed, not rerun


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


_UNDO_SOURCE = frozenset({Trigger.TIMEOUT, Trigger.ABORT, Trigger.INVALID_RESULT,
                          Trigger.NO_ROUTE, Trigger.HOOK_FAILED})


def classify(source: str | None, event: str, dest: str, reason: str | None) -> Kind:
    """The kind of a stored transition, read from its fields as statesaga writes them.

    Toolkit events are reserved names, a walk back ends in a mirror state or
    `compensated`, and an event that moved nothing says so in its reason.
    """
    if source is None:
        return Kind.START
    if event == Trigger.GIVE_UP:
        return Kind.STUCK
    if event in (Trigger.RETRY, Trigger.RETRY_UNKNOWN, Trigger.SENT):
        if source == FAILED:
            return Kind.RESUME
        if source == dest:
            return Kind.RETRY
    if source.startswith(MIRROR_PREFIX):
        if event == Trigger.SUCCEED and source != dest:
            return Kind.MIRROR
        if dest == FAILED:
            return Kind.STUCK
        if source != dest:
            return Kind.MIRROR
    if source == dest and reason is not None and reason.startswith(("ignored", "rejected")):
        return Kind.IGNORED
    if source == dest and event == Trigger.SUCCEED:
        return Kind.LANE
    if source == COMPLETED and event == Trigger.REVERT:
        return Kind.FAILURE
    if source in TERMINALS:
        return Kind.IGNORED
    if event in _UNDO_SOURCE:
        return Kind.UNKNOWN
    if dest == COMPENSATED or dest.startswith(MIRROR_PREFIX):
        return Kind.FAILURE
    return Kind.FORWARD


@attrs.frozen
class Transition:
    """One move of a saga: the outcome of one attempt of `step`, taking it from `source` to `dest`.

    `source` is None for the transition that starts the saga. `duration` is the attempt's
    duration in seconds (None when nothing ran, e.g. an operator's abort). `worker` is the
    id (the `owner`) of the orchestrator or worker that wrote it; None for rows written
    before it was recorded, for a pending saga's start, and for operators' writes. `kind`
    says what the move means for the undo stack (`Kind`).
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
    kind: Kind = attrs.field(
        default=attrs.Factory(lambda t: classify(t.source, t.event, t.dest, t.reason),
                              takes_self=True))


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
