"""statesaga: sagas as explicit state machines, with mirrored compensation and a durable log."""

from .clock import Clock, SystemClock
from .context import StepContext
from .definition import SagaStateMachine
from .exceptions import SagaConflict, SagaDefinitionError, SagaError, SagaNotFound, StoreError
from .graph import TransitionInfo
from .orchestrator import Orchestrator, RecoveryReport
from .records import SagaRecord, SagaStatus, Transition
from .retry import Retry
from .steps import SagaStep
from .stores.base import SagaStore
from .stores.memory import InMemoryStore
from .stores.postgres import PostgresStore
from .stores.sqlite import SQLiteStore
from .stores.urls import open_store

__all__ = [
    "Clock",
    "InMemoryStore",
    "Orchestrator",
    "PostgresStore",
    "RecoveryReport",
    "Retry",
    "SQLiteStore",
    "SagaConflict",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFound",
    "SagaRecord",
    "SagaStateMachine",
    "SagaStatus",
    "SagaStep",
    "SagaStore",
    "StepContext",
    "StoreError",
    "SystemClock",
    "Transition",
    "TransitionInfo",
    "open_store",
]

