"""Every error statesaga raises: one family under `SagaError`, each saying what to do next."""

from __future__ import annotations

from collections.abc import Iterable

DESCRIBED = 2000


def describe(exc: BaseException) -> str:
    """An error as people read it in a history or a dead letter: `"Type: message"`.

    Never raises: an exception whose `str()` raises is described by its type and that; a
    message longer than `DESCRIBED` characters is cut (saying how much), so that what a
    sentence says around it (what to do next) survives when the whole is made storable."""
    try:
        text = str(exc)
    except Exception as inner:  # a broken __str__ must not poison the saga
        return f"{type(exc).__name__} (its str() raised {type(inner).__name__})"
    if len(text) > DESCRIBED:
        text = f"{text[:DESCRIBED]}... ({len(text) - DESCRIBED} more characters)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class SagaError(Exception):
    """Base of every statesaga error; carries the saga id, step and state it is about."""

    def __init__(
        self,
        message: str,
        *,
        saga_id: str | None = None,
        step: str | None = None,
        state: str | None = None,
    ) -> None:
        super().__init__(message)
        self.saga_id = saga_id
        self.step = step
        self.state = state


class SagaDefinitionError(SagaError, ValueError):
    """A saga definition is wrong; `problems` lists every problem found, all at once."""

    def __init__(self, machine: str, problems: Iterable[str]) -> None:
        self.machine = machine
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"saga definition {machine!r} has {count} {noun}:\n{lines}")


class SagaNotFound(SagaError, LookupError):
    """No saga with that id is in the store."""

    def __init__(self, saga_id: str, where: str = "the store") -> None:
        super().__init__(
            f"no saga {saga_id!r} in {where}: check the id with `statesaga list`",
            saga_id=saga_id,
        )


class OutcomeUnknown(SagaError):
    """A step's action failed in a way that leaves its effect in doubt: it is undone too."""


class SagaNotRegistered(SagaError, LookupError):
    """A saga ran under a definition (name and version) this process does not have."""


class InvalidSagaData(SagaError, ValueError):
    """Data, a result or an id that cannot be stored; `key` is where in it (`data['a'][0]`)."""

    def __init__(self, message: str, *, key: str | None = None, saga_id: str | None = None,
                 step: str | None = None, state: str | None = None) -> None:
        super().__init__(message, saga_id=saga_id, step=step, state=state)
        self.key = key


class SagaConflict(SagaError):
    """The saga is someone else's right now: another writer, another worker, another saga."""


class RevisionConflict(SagaConflict):
    """Another writer changed the saga first (optimistic concurrency): reload it."""


class LeaseHeld(SagaConflict):
    """Another worker holds the saga's lease; `owner` and `until` (epoch seconds) say whose."""

    def __init__(self, message: str, *, owner: str | None = None, until: float | None = None,
                 saga_id: str | None = None, state: str | None = None) -> None:
        super().__init__(message, saga_id=saga_id, state=state)
        self.owner = owner
        self.until = until


class IdempotencyConflict(SagaConflict):
    """The saga id is taken by a saga with other data or of another machine."""


class StoreError(SagaError):
    """The saga store failed: unreachable, corrupt row, or a schema it cannot use."""


class StoreRefused(StoreError):
    """The store refused one saga's write for what it holds (a value its database will not
    take, a constraint): writing it again would fail again. The saga is set failed rather
    than run again and again (`Trigger.GIVE_UP`)."""


class CommitOutcomeUnknown(StoreError):
    """The connection failed while a commit was in flight: it may or may not be stored.

    The saga must be read again before anything else is done with it.
    """


class DuplicateMessage(SagaError):
    """A message was consumed before (its id is in the inbox): it is skipped, not applied."""


class UndeliverableEvent(SagaError):
    """An event cannot reach a saga (no correlation id, unknown saga, bad payload)."""


class BusError(SagaError):
    """The event bus failed: unreachable broker, a queue declared otherwise, a timeout."""
