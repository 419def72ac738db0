"""statesaga: sagas as explicit state machines, with mirrored compensation and a durable log."""

from .bus_memory import InMemoryBus
from .clock import Clock, SystemClock
from .context import StepContext
from .definition import SagaStateMachine
from .events import Event, EventBus
from .exceptions import (
    BusError,
    CommitOutcomeUnknown,
    DuplicateMessage,
    IdempotencyConflict,
    InvalidSagaData,
    LeaseHeld,
    RevisionConflict,
    SagaConflict,
    SagaDefinitionError,
    SagaError,
    SagaNotFound,
    SagaNotRegistered,
    StoreError,
    StoreRefused,
    UndeliverableEvent,
)
from .graph import TransitionInfo
from .orchestrator import Orchestrator
from .orchestrator_many import RecoveryReport
from .records import SagaRecord, SagaStatus, Transition
from .retry import Retry
from .steps import SagaStep
from .stores.base import SagaStore
from .stores.memory import InMemoryStore
from .stores.postgres import PostgresStore
from .stores.sqlite import SQLiteStore
from .stores.urls import open_store

__all__ = [
    "BusError",
    "Clock",
    "CommitOutcomeUnknown",
    "DataType",
    "DuplicateMessage",
    "Event",
    "EventBus",
    "IdempotencyConflict",
    "InMemoryBus",
    "InMemoryStore",
    "InvalidSagaData",
    "LeaseHeld",
    "Orchestrator",
    "PostgresStore",
    "RabbitMQBus",
    "RecoveryReport",
    "Retry",
    "RevisionConflict",
    "SQLiteStore",
    "SagaConflict",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFound",
    "SagaNotRegistered",
    "SagaRecord",
    "SagaStateMachine",
    "SagaStatus",
    "SagaStep",
    "SagaStore",
    "StepContext",
    "StoreError",
    "StoreRefused",
    "SystemClock",
    "Transition",
    "TransitionInfo",
    "UndeliverableEvent",
    "open_store",
]


def __getattr__(name: str) -> object:
    """`RabbitMQBus` and `DataType` load on first use: `import statesaga` imports neither
    aio-pika nor cattrs."""
    if name == "RabbitMQBus":
        from .bus_rabbitmq import RabbitMQBus

        return RabbitMQBus
    if name == "DataType":
        from .typed import DataType

        return DataType
    raise AttributeError(f"module 'statesaga' has no attribute {name!r}")
