"""Retry policies for actions and compensations, validated when built."""

from __future__ import annotations

import random

import attrs

from .exceptions import SagaDefinitionError


def _positive_int(instance: Retry, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SagaDefinitionError(
            "Retry", [f"attempts must be an int >= 1 (got {value!r}); use 1 for no retries"]
        )


def _non_negative(instance: Retry, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise SagaDefinitionError(
            "Retry", [f"{attribute.name} must be a number >= 0 seconds (got {value!r})"]
        )


def _exception_types(
    instance: Retry, attribute: attrs.Attribute[tuple[type[BaseException], ...]], value: object
) -> None:
    bad = [
        t for t in value  # type: ignore[attr-defined]
        if not (isinstance(t, type) and issubclass(t, BaseException))
    ]
    if bad:
        raise SagaDefinitionError(
            "Retry", [f"non_retryable must hold exception classes, not {bad!r}"]
        )


@attrs.frozen
class Retry:
    """How often to try a callable, and how long to wait between tries.

    The wait before attempt n+1 is `backoff * 2**(n-1)`, capped at `max_backoff`,
    then spread by +/- `jitter` (a fraction). `non_retryable` exceptions stop at once.
    """

    attempts: int = attrs.field(default=1, validator=_positive_int)
    backoff: float = attrs.field(default=0.05, validator=_non_negative)
    max_backoff: float = attrs.field(default=2.0, validator=_non_negative)
    jitter: float = attrs.field(default=0.1, validator=_non_negative)
    non_retryable: tuple[type[BaseException], ...] = attrs.field(
        default=(), converter=tuple, validator=_exception_types
    )

    def __attrs_post_init__(self) -> None:
        if self.jitter > 1:
            raise SagaDefinitionError(
                "Retry", [f"jitter is a fraction between 0 and 1 (got {self.jitter!r})"]
            )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        base = min(self.backoff * 2.0 ** (attempt - 1), self.max_backoff)
        if self.jitter:
            base *= 1 + random.uniform(-self.jitter, self.jitter)
        return base

    def retryable(self, error: BaseException) -> bool:
        return not isinstance(error, self.non_retryable)


ACTION_RETRY = Retry(attempts=1)
"""An action is tried once by default: a forward step that fails is compensated."""

COMPENSATION_RETRY = Retry(attempts=5, backoff=0.05, max_backoff=1.0)
"""A compensation must eventually succeed, so it is retried with a short backoff."""
