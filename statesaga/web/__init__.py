"""The operations console: an ASGI app (Starlette) over a saga store, served by `statesaga web`.

`app(store, sagas=..., token=None)` can be mounted in any ASGI application. Pages are server-
rendered HTML that works without JavaScript; each has JSON beside it under `/api/`. Without
a token the console is read-only; with one, stuck sagas can be retried and running ones
aborted, each with a reason written to the saga's history. Needs `statesaga[web]`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from ..clock import Clock
    from ..definition import SagaStateMachine
    from ..stores.base import SagaStore

__all__ = ["app"]


def app(store: SagaStore, sagas: Iterable[SagaStateMachine] = (), token: str | None = None,
        *, bus: Any = None, clock: Clock | None = None) -> Starlette:
    """The console for `store`: `sagas` are the definitions it can draw and act on, `token`
    allows retry and abort (None: read-only), `bus` shows its dead letters (an `InMemoryBus`'s
    `dead_letters`)."""
    from starlette.applications import Starlette
    from starlette.routing import Route

    from ..clock import SystemClock
    from .console import Console
    from .routes import Views, guarded

    console = Console(store, tuple(sagas), token or None, bus,
                      clock if clock is not None else SystemClock())
    views = Views(console)

    def route(path: str, view: Any, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, guarded(console, view), methods=list(methods))

    routes = [route("/", views.index), route("/api/sagas", views.index),
              route("/sagas/{rest:path}", views.saga, ("GET", "POST")),
              route("/api/sagas/{rest:path}", views.saga, ("GET", "POST")),
              route("/metrics", views.metrics)]
    for name in ("workers", "outbox", "dead-letters", "definitions"):
        routes += [route(f"/{name}", views.simple), route(f"/api/{name}", views.simple)]
    console_app = Starlette(routes=routes)
    console_app.state.console = console
    return console_app
