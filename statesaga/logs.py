"""The one logger statesaga logs through: quiet unless asked, structured when configured.

When the application configured structlog (`structlog.is_configured()`), every event goes
through its processors. Otherwise events go to the stdlib logger `statesaga`, whose
default cut (Python's last-resort handler: WARNING and up, to stderr) shows only what
needs a person. Below ERROR a traceback is shown only at DEBUG: a failed step is an
expected outcome, and the event's `error` ("Type: message") says what happened.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import sys
from collections.abc import Callable, Iterator
from typing import Any

import structlog

from .exceptions import describe

NAME = "statesaga"
"""The stdlib logger's name, and the structlog logger's."""

Method = Callable[..., None]
_std = logging.getLogger(NAME)
_muted: contextvars.ContextVar[bool] = contextvars.ContextVar("statesaga_muted", default=False)
_is_configured = structlog.is_configured
DEBUG, INFO, WARNING, ERROR, CRITICAL = (logging.DEBUG, logging.INFO, logging.WARNING,
                                         logging.ERROR, logging.CRITICAL)
# LogRecord's own attributes: a field of that name stays in the message, not in `extra`.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message", "asctime"}


class _Level:
    """A level of `SagaLogger`: `logger.info` is the call to make, a no-op when it is off."""

    def __init__(self, level: int, name: str) -> None:
        self.level, self.name = level, name

    def __get__(self, logger: SagaLogger, owner: Any = None) -> Method:
        return logger._method(self.level, self.name)


class SagaLogger:
    """A logger with bound key/values and structlog's calls: `log.info(event, **fields)`.

    Each level is a property that hands out the call to make: a no-op when the level is
    off, so a call that shows nothing costs one check and an empty call.
    """

    __slots__ = ("_bound", "_context")

    def __init__(self, context: dict[str, Any] | None = None) -> None:
        self._context = context or {}
        self._bound: Any = None  # the structlog logger, bound on first use

    def bind(self, **fields: Any) -> SagaLogger:
        """A logger that adds `fields` to every event."""
        return SagaLogger({**self._context, **fields})

    debug = _Level(DEBUG, "debug")
    info = _Level(INFO, "info")
    warning = warn = _Level(WARNING, "warning")
    error = _Level(ERROR, "error")
    critical = _Level(CRITICAL, "critical")

    @property
    def exception(self) -> Method:
        """`error` with the traceback of the exception being handled."""
        return functools.partial(self._method(ERROR, "error"), exc_info=True)

    def _method(self, level: int, name: str) -> Method:
        """The call that logs at `level`: the application's structlog, stdlib, or nothing."""
        if _muted.get():
            return _nop
        if _is_configured():
            bound = self._bound
            if bound is None:  # bound once, as structlog's `bind`; unbound, it follows configure()
                bound = self._bound = structlog.get_logger(NAME).bind(**self._context) \
                    if self._context else structlog.get_logger(NAME)
            method: Method = getattr(bound, name)
            enabled = getattr(bound, "is_enabled_for", None)
            if level >= ERROR or enabled is None or not enabled(level) or enabled(DEBUG):
                return method
            return functools.partial(_structured, method)
        if not _std.isEnabledFor(level):
            return _nop
        return functools.partial(self._emit, level)

    def _emit(self, level: int, event: str, *args: Any, **fields: Any) -> None:
        """To the stdlib logger: `event key=value ...` on one line, the fields as `extra`."""
        exc_info = _expected_failure(fields, level, _std.isEnabledFor(DEBUG)) \
            if "exc_info" in fields else None
        fields = {**self._context, **fields}
        message = (event % args if args else event) + "".join(
            f" {key}={value!r}" for key, value in fields.items())
        extra = {key: value for key, value in fields.items() if key not in _RESERVED}
        extra["event"] = event
        _std.log(level, message, exc_info=exc_info, extra=extra, stacklevel=2)

    def __repr__(self) -> str:
        return f"<SagaLogger {self._context!r}>"


@contextlib.contextmanager
def muted() -> Iterator[None]:
    """Nothing is logged inside (and in the tasks started inside): for `explore_failures`,
    whose failures are injected on purpose and reported by it, not by the sagas' logs."""
    token = _muted.set(True)
    try:
        yield
    finally:
        _muted.reset(token)


def _nop(event: str, *args: Any, **fields: Any) -> None:
    """A level that is off."""


quiet: Method = _nop
"""What a level that is off hands out: `if log.info is not quiet:` skips building fields."""


def _structured(method: Method, event: str, *args: Any, **fields: Any) -> None:
    """A structlog call below ERROR with DEBUG off: an exception is logged as its gist."""
    if "exc_info" in fields:
        _expected_failure(fields, INFO, False)
    method(event, *args, **fields)


def _expected_failure(fields: dict[str, Any], level: int, debug: bool) -> Any:
    """Take exc_info out of `fields`; return it if its traceback is shown (ERROR, DEBUG).

    Otherwise the failure is expected: `fields` get its gist, `error="Type: message"`.
    """
    exc_info = fields.pop("exc_info")
    if level >= ERROR or debug or not exc_info:
        return exc_info
    fields.setdefault("error", _gist(exc_info))
    return None


def _debug_on(bound: Any) -> bool:
    """Whether a structlog logger shows DEBUG (yes when it cannot say, as before)."""
    check = getattr(bound, "is_enabled_for", None)
    return True if check is None else bool(check(DEBUG))


def _gist(exc_info: Any) -> str:
    """`"Type: message"` of an exc_info value: an exception, a sys.exc_info() tuple, or True."""
    exc = exc_info if isinstance(exc_info, BaseException) else (
        exc_info[1] if isinstance(exc_info, tuple) else sys.exc_info()[1])
    return "unknown error" if exc is None else describe(exc)


logger = SagaLogger()
"""The logger every statesaga module logs through: `from .logs import logger as _log`."""
