"""Shared benchmark helpers: timing, the machine description, logging as in production."""

from __future__ import annotations

import logging
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable

import structlog


def quiet_logs() -> None:
    """Benchmarks run with info-level events filtered out, as in production."""
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        processors=[structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.JSONRenderer()],  # a typical production set-up
        logger_factory=structlog.ReturnLoggerFactory(),  # warnings processed, not printed
        cache_logger_on_first_use=True,
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


async def best_of(runs: int, func: Callable[[], Awaitable[float]]) -> float:
    """The median of `runs` measurements (each one returns seconds per unit)."""
    return statistics.median([await func() for _ in range(runs)])


def per_unit(seconds: float, units: int) -> float:
    return seconds / units


def now() -> float:
    return time.perf_counter()
