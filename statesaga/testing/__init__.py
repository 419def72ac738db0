"""Helpers for testing sagas: fake services, a controllable clock, failure exploration."""

from .asserts import assert_transitions
from .clock import FakeClock
from .explore import explore_failures
from .fakes import FakeService, ServiceError, StaleCall
from .report import FailureReport, ScenarioResult
from .scenarios import InjectedFailure, SimulatedCrash

__all__ = ["FailureReport", "FakeClock", "FakeService", "InjectedFailure", "ScenarioResult",
           "ServiceError", "SimulatedCrash", "StaleCall", "assert_transitions",
           "explore_failures"]
