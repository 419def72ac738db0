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

__all__ = [
    "Clock",
    "InMemoryStore",
    "Orchestrator",
    "RecoveryReport",
    "Retry",
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
]
