"""The cost of one log call that shows nothing: what every transition pays when logs are off.

Measured for the three set-ups of the README's "Logs": nothing configured (the stdlib
logger `statesaga`, WARNING by default), stdlib logging at WARNING, and structlog
configured with info filtered out; beside the same call on a bare structlog logger.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import structlog

from statesaga.logs import NAME, logger

from .common import quiet_logs

CALLS = 200_000


def _per_call(call: Callable[[], Any]) -> float:
    """Seconds per call: the fastest of five timed loops (the least disturbed by others)."""
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(CALLS):
            call()
        times.append((time.perf_counter() - start) / CALLS)
    return min(times)


def _transition(log: Any) -> Callable[[], Any]:
    """The call the runner makes on every transition, on a logger bound to one saga."""
    def call() -> Any:
        return log.info("saga.transition", source="a", dest="b", trigger="succeed", step="a",
                        attempt=1, duration_ms=0.1)
    return call


def _floor() -> Callable[[], Any]:
    def nothing(event: str, **fields: Any) -> None:
        return None

    def call() -> Any:
        return nothing("saga.transition", source="a", dest="b", trigger="succeed", step="a",
                       attempt=1, duration_ms=0.1)
    return call


async def run() -> list[str]:
    rows = [("a function taking the same arguments (floor)", _per_call(_floor()))]
    structlog.reset_defaults()
    try:
        bound = logger.bind(saga_id="s-1", saga="bench")
        rows.append(("nothing configured", _per_call(_transition(bound))))
        logging.getLogger(NAME).setLevel(logging.WARNING)
        rows.append(("stdlib logging at WARNING", _per_call(_transition(bound))))
        logging.getLogger(NAME).setLevel(logging.NOTSET)
    finally:
        quiet_logs()
    rows.append(("structlog, info filtered out", _per_call(_transition(
        logger.bind(saga_id="s-1", saga="bench")))))
    rows.append(("the same on a bare structlog logger", _per_call(_transition(
        structlog.get_logger(NAME).bind(saga_id="s-1", saga="bench")))))
    lines = ["## Logs: one `saga.transition` call that shows nothing", "",
             "| set-up | ns per call |", "|---|---:|"]
    lines += [f"| {what} | {seconds * 1e9:.0f} |" for what, seconds in rows]
    return lines
