"""Helpers for testing sagas: fake services, a controllable clock, failure exploration."""

from .clock import FakeClock
from .fakes import FakeService, ServiceError

__all__ = ["FakeClock", "FakeService", "ServiceError"]
