"""Helpers for testing sagas: fake services, a controllable clock, failure exploration."""

from .fakes import FakeService, ServiceError

__all__ = ["FakeService", "ServiceError"]
