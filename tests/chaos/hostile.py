"""Values no store can keep as they are, for the chaos suite and tests/test_faults.py.

An error text made of them must be made storable, a result made of them fails its step (it
ran: it is compensated too), data made of them is refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Unprintable(Exception):
    """An exception whose str() raises, as some third-party errors do."""

    def __str__(self) -> str:
        raise ValueError("no text for this error")


def nested(levels: int) -> Any:
    """A list `levels` deep (deeper than a stored value may be, past 100)."""
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


HUGE = 16 * 2**20 + 5  # characters: more than a stored value may hold (16 MiB)

# What a step raises: each makes a new exception.
HOSTILE_ERRORS: dict[str, Callable[[], BaseException]] = {
    "surrogate": lambda: RuntimeError("bad \ud800 text"),
    "nul": lambda: RuntimeError("bad \x00 text"),
    "huge": lambda: RuntimeError("x" * HUGE),
    "unprintable": Unprintable,
}
# What a step returns.
HOSTILE_RESULTS: dict[str, Callable[[], Any]] = {
    "deep-result": lambda: {"tree": nested(5000)},
    "surrogate-result": lambda: {"note": "\ud800"},
    "nul-result": lambda: {"note": "a\x00b"},
    "huge-result": lambda: {"blob": "x" * HUGE},
}
HOSTILE = (*HOSTILE_ERRORS, *HOSTILE_RESULTS)
# A saga's data that `start` must refuse, writing nothing.
HOSTILE_DATA = {"surrogate": {"note": "\ud800"}, "nul": {"note": "a\x00b"},
                "deep": {"tree": nested(5000)}}
