"""OpenTelemetry for sagas: spans, counters and gauges whenever `opentelemetry-api` is importable.

There is no switch: with the API installed (the `otel` extra) every saga makes a span
`saga <name>` with a child per attempt (`step <step>` / `compensate <step>`), and counts what
it started and how it ended; an application's SDK decides where that goes. Without it each
call is one function call that returns at once. The trace context travels in `Event.headers`,
so a choreography (saga, bus, participants) is one trace.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

_ABSENT: Any = object()
_otel: Any = _ABSENT  # the loaded API (a namespace), None when it is not installed
_saga: contextvars.ContextVar[str | None] = contextvars.ContextVar("statesaga_span", default=None)
_parked: weakref.WeakSet[Any] = weakref.WeakSet()
_store: dict[str, Any] = {"counts": {}, "outbox_unsent": 0, "outbox_lag": 0.0}


class _Null:
    """What every call gives when OpenTelemetry is not installed: nothing, cheaply."""

    __slots__ = ()

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def outcome(self, outcome: str) -> None:
        return None


NULL = _Null()


def _api() -> Any:
    """The OpenTelemetry API and statesaga's instruments, loaded once; None if not installed."""
    global _otel
    if _otel is _ABSENT:
        try:
            from opentelemetry import context, metrics, propagate, trace
        except ImportError:
            _otel = None
            return None
        _otel = _Instruments(context, metrics, propagate, trace)
    return _otel


def use_providers(tracer_provider: Any, meter_provider: Any) -> Any:
    """Send statesaga's spans and metrics to these providers instead of the global ones
    (for tests: OpenTelemetry's globals can be set once per process); returns what was
    used before, for `restore`."""
    global _otel
    before = _otel
    from opentelemetry import context, metrics, propagate, trace

    _otel = _Instruments(context, metrics, propagate, trace, tracer_provider=tracer_provider,
                         meter_provider=meter_provider)
    return before


def restore(before: Any) -> None:
    global _otel
    _otel = before


class _Instruments:
    """The API's modules and statesaga's tracer and instruments; the global providers' unless
    others are given (tests give their own, and leave the process's globals alone)."""

    def __init__(self, context: Any, metrics: Any, propagate: Any, trace: Any, *,
                 tracer_provider: Any = None, meter_provider: Any = None) -> None:
        self.context, self.propagate, self.trace = context, propagate, trace
        self.own = tracer_provider is not None or meter_provider is not None
        self.live = False  # a provider was found set (it stays set: OpenTelemetry's rule)
        self._globals = (trace, getattr(metrics, "_internal", None))
        self.tracer = (tracer_provider or trace).get_tracer("statesaga")
        meter = (meter_provider or metrics).get_meter("statesaga")
        self.counters = {
            ending: meter.create_counter(f"statesaga.sagas.{ending}", unit="{saga}",
                                         description=f"Sagas {ending}, by saga name")
            for ending in ("started", "completed", "compensated", "stuck")}
        self.duration = meter.create_histogram(
            "statesaga.step.duration", unit="s",
            description="How long each attempt of a step or compensation took")
        meter.create_observable_gauge(
            "statesaga.sagas.parked", callbacks=[_observe_parked], unit="{saga}",
            description="Sagas this process keeps in memory while they wait for an event")
        meter.create_observable_gauge(
            "statesaga.outbox.unsent", callbacks=[_observe("outbox_unsent")], unit="{message}",
            description="Outbox messages not sent yet (as the console last read the store)")
        meter.create_observable_gauge(
            "statesaga.outbox.lag", callbacks=[_observe("outbox_lag")], unit="s",
            description="Age of the oldest unsent outbox message (as last read)")
        meter.create_observable_gauge(
            "statesaga.sagas", callbacks=[_observe_counts], unit="{saga}",
            description="Sagas in the store by status (as the console last read it)")
        self.observation = metrics.Observation


    def idle(self) -> bool:
        """Nothing can record: no provider given and none set globally yet (the API's own
        globals, None until `set_tracer_provider` / `set_meter_provider`). Spans and metrics
        would all be no-ops, so the hot path skips them; once one is set, they are made."""
        if self.live:
            return False
        trace, metrics = self._globals
        self.live = self.own or getattr(trace, "_TRACER_PROVIDER", True) is not None \
            or getattr(metrics, "_METER_PROVIDER", True) is not None  # set once, for good
        return not self.live


class _Span:
    """A span made current until exit: the API's calls without its context-manager layers."""

    __slots__ = ("api", "span", "token")

    def __init__(self, api: Any, name: str, attributes: Mapping[str, Any]) -> None:
        self.api = api
        self.span = api.tracer.start_span(name, attributes=attributes)
        # No SDK (nothing records): no context to switch, the caller's stays current.
        self.token = api.context.attach(api.trace.set_span_in_context(self.span)) \
            if self.span.is_recording() else None

    def end(self, exc: BaseException | None) -> None:
        if self.token is None:
            return
        self.api.context.detach(self.token)
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(self.api.trace.Status(self.api.trace.StatusCode.ERROR))
        self.span.end()


def saga_span(name: str, saga_id: str | None) -> Any:
    """The span `saga <name>` around driving one saga (none if one for it is already open)."""
    api = _api()
    if api is None or api.idle() or (saga_id is not None and _saga.get() == saga_id):
        return NULL
    return _SagaSpan(api, name, saga_id)


class _SagaSpan:
    def __init__(self, api: Any, name: str, saga_id: str | None) -> None:
        self.api, self.name, self.saga_id = api, name, saga_id

    def __enter__(self) -> _SagaSpan:
        attributes = {"statesaga.saga": self.name}
        if self.saga_id is not None:
            attributes["statesaga.saga_id"] = self.saga_id
        self.current = _Span(self.api, f"saga {self.name}", attributes)
        self.span = self.current.span
        self.token = _saga.set(self.saga_id)
        return self

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        _saga.reset(self.token)
        self.current.end(exc)

    def outcome(self, outcome: str) -> None:
        self.span.set_attribute("statesaga.outcome", outcome)


def named(span: Any, saga_id: str) -> None:
    """Tell the saga span which saga it is, once its id is known."""
    if isinstance(span, _SagaSpan):
        span.span.set_attribute("statesaga.saga_id", saga_id)
        _saga.set(saga_id)


def attempt_span(compensation: bool, saga: str, saga_id: str, step: str, attempt: int) -> Any:
    """The span of one attempt: `step <step>` or `compensate <step>`; call `.outcome(...)`."""
    api = _api()
    if api is None or api.idle():
        return NULL
    return _AttemptSpan(api, compensation, saga, saga_id, step, attempt)


class _AttemptSpan:
    def __init__(self, api: Any, compensation: bool, saga: str, saga_id: str, step: str,
                 attempt: int) -> None:
        self.api, self.kind = api, "compensate" if compensation else "step"
        self.attributes = {"statesaga.saga": saga, "statesaga.saga_id": saga_id,
                           "statesaga.step": step, "statesaga.attempt": attempt}
        self.result = "error"

    def __enter__(self) -> _AttemptSpan:
        self.current = _Span(self.api, f"{self.kind} {self.attributes['statesaga.step']}",
                             self.attributes)
        self.start = time.perf_counter()
        return self

    def outcome(self, outcome: str) -> None:
        self.result = outcome

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        span = self.current.span
        span.set_attribute("statesaga.outcome", self.result)
        if self.result != "ok":
            span.set_status(self.api.trace.Status(self.api.trace.StatusCode.ERROR))
        self.api.duration.record(time.perf_counter() - self.start, {
            "statesaga.saga": self.attributes["statesaga.saga"],
            "statesaga.step": self.attributes["statesaga.step"], "statesaga.kind": self.kind,
            "statesaga.outcome": self.result})
        self.current.end(exc)


def outcome_of(exc: BaseException | None, unknown: bool) -> str:
    """An attempt's outcome as a span attribute: ok, error, timeout or unknown."""
    if exc is None:
        return "ok"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "unknown" if unknown else "error"


def saga_started(saga: str) -> None:
    api = _api()
    if api is not None:
        api.counters["started"].add(1, {"statesaga.saga": saga})


_ENDINGS = {"completed": "completed", "compensated": "compensated", "failed": "stuck"}


def saga_ended(saga: str, state: str) -> None:
    """Count a saga that reached a terminal state (`failed` counts as stuck)."""
    api = _api()
    if api is not None and state in _ENDINGS:
        api.counters[_ENDINGS[state]].add(1, {"statesaga.saga": saga})


def headers() -> dict[str, str]:
    """The current trace context as message headers (empty without OpenTelemetry or a span)."""
    api = _api()
    if api is None:
        return {}
    carrier: dict[str, str] = {}
    api.propagate.inject(carrier)
    return carrier


def consume(event: Any, name: str) -> Any:
    """A span `name` for handling `event`, continuing the trace its headers carry."""
    api = _api()
    if api is None:
        return NULL
    return _consume(api, event, name)


@contextlib.contextmanager
def _consume(api: Any, event: Any, name: str) -> Iterator[Any]:
    parent = api.propagate.extract(dict(getattr(event, "headers", None) or {}))
    token = api.context.attach(parent)
    try:
        current = _Span(api, name, {"messaging.message.id": event.message_id,
                                    "statesaga.saga_id": event.correlation_id or ""})
        try:
            yield current.span
        except BaseException as exc:
            current.end(exc)
            raise
        current.end(None)
    finally:
        api.context.detach(token)


def track_parked(orchestrator: Any) -> None:
    """Count `orchestrator`'s parked sagas (`_parked`) in the gauge, for as long as it lives."""
    if _api() is not None:
        _parked.add(orchestrator)


def observe_store(*, counts: Mapping[str, int], outbox_unsent: int, outbox_lag: float) -> None:
    """What the console last read from the store, for the store gauges."""
    _store.update(counts=dict(counts), outbox_unsent=outbox_unsent, outbox_lag=outbox_lag)


def _observe_parked(options: Any) -> list[Any]:
    return [_otel.observation(sum(len(o._parked) for o in list(_parked)))]


def _observe(key: str) -> Any:
    def observe(options: Any) -> list[Any]:
        return [_otel.observation(_store[key])]

    return observe


def _observe_counts(options: Any) -> list[Any]:
    return [_otel.observation(n, {"statesaga.status": status})
            for status, n in sorted(_store["counts"].items())]
