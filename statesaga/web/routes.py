"""The console's request handlers: filters and ids checked, HTML or JSON, actions authorised.

Actions (`POST /sagas/{id}/retry`, `/abort`) need the console's token, as
`Authorization: Bearer <token>` or as the form's `token` field. No cookie is ever set, so a
forged cross-site request has nothing to ride on: it cannot know the token. A browser's
cross-site post (`Origin` of another host, or `Sec-Fetch-Site: cross-site`) is refused too.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from ..codec import check_id
from ..exceptions import InvalidSagaData, SagaError, SagaNotFound
from ..records import SagaStatus
from ..stores.reads import SagaQuery
from ..timeline import format_timeline
from . import html, ops_pages
from .console import Console
from .metrics import prometheus_text

ACTIONS = ("retry", "abort")
MAX_BODY = 64 * 1024
MAX_FILTER = 1000
REGISTER = ("Register it: statesaga web --saga MODULE:ATTR (or $STATESAGA_SAGAS, or an entry "
            "point in the group statesaga.sagas), or statesaga.web.app(store, sagas=[...]).")
FLASH = {"retried": "Retried: the compensation ran again; the reason is in the timeline.",
         "aborted": "Aborted: the saga was compensated; the reason is in the timeline.",
         "abort-requested": "Abort requested: the worker running this saga compensates it "
                            "at its next transition."}


# Every HTML answer: never framed (the action forms cannot be clickjacked), no saga id leaks
# in a Referer, no content sniffing.
HTML_HEADERS = {"X-Frame-Options": "DENY", "Content-Security-Policy": "frame-ancestors 'none'",
                "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}


class Problem(Exception):
    """An answer other than 200: a status, what went wrong, and what to do."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.hint = status, message, hint


def wants_json(request: Request) -> bool:
    """JSON for /api/, for a bearer token (a program), or when asked for it alone."""
    accept = request.headers.get("accept", "")
    return (request.url.path.startswith("/api/") or "authorization" in request.headers
            or ("application/json" in accept and "text/html" not in accept))


def problem_response(request: Request, exc: Problem, read_only: bool) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    if wants_json(request):
        return JSONResponse({"error": exc.message, "hint": exc.hint}, exc.status,
                            headers=headers)
    title = {400: "Bad request", 401: "Token needed", 403: "Not allowed", 404: "Not found",
             409: "Cannot do that now"}.get(exc.status, "Error")
    return HTMLResponse(html.message_page(title, exc.message, read_only=read_only,
                                          hint=exc.hint), exc.status,
                        headers=HTML_HEADERS | (headers or {}))


def guarded(console: Console, view: Callable[[Request], Awaitable[Response]]
            ) -> Callable[[Request], Awaitable[Response]]:
    async def handle(request: Request) -> Response:
        try:
            return await view(request)
        except Problem as exc:
            return problem_response(request, exc, console.read_only)
        except SagaNotFound as exc:
            return problem_response(request, Problem(404, str(exc)), console.read_only)

    return handle


def page(request: Request, whole: str, live: str) -> HTMLResponse:
    """The page, or only its live part for the refreshing script."""
    return HTMLResponse(live if request.headers.get("x-console-partial") else whole,
                        headers=HTML_HEADERS)


def _text(params: dict[str, str], name: str) -> str | None:
    value = params.get(name, "").strip()
    if not value:
        return None
    if len(value) > MAX_FILTER or not value.isprintable():
        raise Problem(400, f"the filter {name!r} must be printable text of at most "
                           f"{MAX_FILTER} characters")
    return value


def _time(params: dict[str, str], name: str) -> datetime | None:
    value = _text(params, name)
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise Problem(400, f"the filter {name!r} is not a date or time: {value[:40]!r}",
                      "write it as 2026-03-01 or 2026-03-01T12:00 (UTC unless an offset "
                      "is given)") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def query_of(params: dict[str, str]) -> SagaQuery:
    """The listing's filters from query parameters; `Problem(400)` naming a bad one."""
    status = _text(params, "status")
    if status is not None and status not in {s.value for s in SagaStatus}:
        raise Problem(400, f"unknown status {status[:40]!r}: one of "
                           f"{', '.join(s.value for s in SagaStatus)}")
    limit = _text(params, "limit") or "50"
    if not limit.isdigit():
        raise Problem(400, f"limit must be a number from 1 to 1000, not {limit[:20]!r}")
    try:
        return SagaQuery(
            status=None if status is None else SagaStatus(status), name=_text(params, "name"),
            version=_text(params, "version"), state=_text(params, "state"),
            created_from=_time(params, "from"), created_to=_time(params, "to"),
            error=_text(params, "error"), id_prefix=_text(params, "id"),
            after=_text(params, "after"), limit=int(limit))
    except ValueError as exc:
        raise Problem(400, f"bad filter: {exc}") from exc


def saga_target(request: Request, prefix: str) -> tuple[str, str]:
    """(saga id, what: "", "diagram.svg", "retry" or "abort") from the raw path, where an id's
    '/' arrives as %2F; `Problem(404)` for an id no saga can have."""
    raw = request.scope.get("raw_path")
    path = raw.decode("latin-1") if raw else request.url.path
    rest = urlsplit(path).path[len(prefix):]
    parts = rest.split("/")
    what = ""
    if len(parts) > 1 and parts[-1] in ("diagram.svg", *ACTIONS):
        what = parts.pop()
    try:
        saga_id = check_id(unquote("/".join(parts), errors="strict"))
    except (InvalidSagaData, UnicodeDecodeError) as exc:
        raise Problem(404, f"no saga can have that id: {exc}") from None
    return saga_id, what


class Views:
    """One console's handlers."""

    def __init__(self, console: Console) -> None:
        self.console = console

    async def index(self, request: Request) -> Response:
        params = dict(request.query_params)
        try:
            query = query_of(params)
        except Problem as exc:
            if wants_json(request):
                raise
            data = await self.console.listing(SagaQuery(limit=1))
            data["sagas"], data["next"] = [], None
            whole, _ = html.list_page(data, params, read_only=self.console.read_only,
                                      error=exc.message + (" " + exc.hint if exc.hint else ""))
            return HTMLResponse(whole, 400, headers=HTML_HEADERS)
        data = await self.console.listing(query)
        if wants_json(request):
            return JSONResponse(data)
        return page(request, *html.list_page(data, params, read_only=self.console.read_only))

    async def saga(self, request: Request) -> Response:
        prefix = "/api/sagas/" if request.url.path.startswith("/api/") else "/sagas/"
        saga_id, what = saga_target(request, prefix)
        if what in ACTIONS:
            if request.method != "POST":
                raise Problem(405, f"{what} is a POST, with a reason and the token")
            return await self.act(request, saga_id, what)
        if request.method != "GET":
            raise Problem(405, "only GET here")
        record, summary = await self.console.saga(saga_id)
        parent, children = await self.console.family(record)
        if what == "diagram.svg":
            return await self.diagram(record, children)
        data = self.console.saga_json(record, summary, parent, children)
        if wants_json(request):
            return JSONResponse(data)
        svg = await self._svg(record, children)
        from ..cli_sagas import command_line

        shell = command_line(self.console.store.url, False, [], record.name, record.version,
                             "retry", saga_id, "--reason", "what was fixed")
        if self.console.machine(record) is not None:  # the shell may know it on its own
            shell = shell.replace(" --saga MODULE:ATTR", "") + " (with --saga MODULE:ATTR if " \
                "its definition is neither built in, in $STATESAGA_SAGAS nor an entry point)"
        advice = (f"{html.e(record.error or '')}<br>Fix what makes the compensation fail, "
                  "then retry it here with a reason" + (" (start the console with a token "
                                                        "to allow it)" if
                                                        self.console.read_only else "")
                  + f", or from a shell: <code>{html.e(shell)}</code>")
        flash = FLASH.get(request.query_params.get("done", ""))
        return page(request, *html.saga_page(
            data, svg=svg, timeline=format_timeline(record, children=children, parent=parent),
            advice=advice, flash=flash,
            register_hint=REGISTER, read_only=self.console.read_only))

    async def _svg(self, record: Any, children: Any) -> str | None:
        try:
            return await self.console.svg(record, children)
        except SagaError:  # no `dot` here: the page shows the timeline, the .svg says why
            return None

    async def diagram(self, record: Any, children: Any) -> Response:
        if self.console.machine(record) is None:
            raise Problem(404, f"the definition {record.name} version {record.version} is not "
                               "registered with this console, so it cannot draw the saga",
                          REGISTER)
        try:
            svg = await self.console.svg(record, children)
        except SagaError as exc:
            raise Problem(503, str(exc)) from exc
        return Response(svg, media_type="image/svg+xml",
                        headers={"Content-Security-Policy": "default-src 'none'; "
                                                            "style-src 'unsafe-inline'"})

    async def act(self, request: Request, saga_id: str, what: str) -> Response:
        form = await self._body(request)
        self._authorise(request, form)
        reason = str(form.get("reason") or "").strip()
        if not reason:
            raise Problem(400, f"a reason is required to {what} a saga: it is written to the "
                               "saga's history")
        if len(reason) > 2000 or not reason.isprintable():
            raise Problem(400, "the reason must be printable text of at most 2000 characters")
        orch = self.console.orchestrator
        try:
            if what == "retry":
                record, done = await orch.retry(saga_id, reason=reason), "retried"
            else:
                record = await orch.abort(saga_id, reason=reason)
                done = "aborted" if record.is_terminal else "abort-requested"
        except SagaNotFound:
            raise
        except SagaError as exc:
            raise Problem(409, str(exc)) from exc
        if wants_json(request):
            summary = await self.console.reads.saga_summary(saga_id)
            kin = await self.console.family(record)
            return JSONResponse(self.console.saga_json(record, summary, *kin) | {"done": done})
        return RedirectResponse(html.saga_url(saga_id, f"?done={done}"), 303)

    async def _body(self, request: Request) -> dict[str, Any]:
        body = await request.body()
        if len(body) > MAX_BODY:
            raise Problem(413, "the request body is too large")
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        try:
            if kind == "application/json":
                found = json.loads(body or b"{}")
                if not isinstance(found, dict):
                    raise ValueError("not a JSON object")
                return found
            if kind in ("application/x-www-form-urlencoded", ""):
                return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except (ValueError, UnicodeDecodeError) as exc:
            raise Problem(400, f"cannot read the request body: {exc}") from exc
        raise Problem(415, f"send the reason as a form or as JSON, not {kind[:40]!r}")

    def _authorise(self, request: Request, form: dict[str, Any]) -> None:
        if self.console.read_only:
            raise Problem(403, "this console is read-only: it was started without a token",
                          "start it with statesaga web --token T (or app(store, token=...)) "
                          "to allow retry and abort")
        site = request.headers.get("sec-fetch-site", "")
        origin = request.headers.get("origin")
        if site == "cross-site" or (origin not in (None, "null") and
                                    urlsplit(origin).netloc != request.headers.get("host")):
            raise Problem(403, "a request from another site cannot act on sagas")
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else form.get("token")
        if not self.console.allows(token if isinstance(token, str) else None):
            raise Problem(401, "the token is missing or wrong",
                          "send Authorization: Bearer <token>, or the token in the form")

    async def simple(self, request: Request) -> Response:
        """The workers, outbox, dead letters and definitions pages, and their JSON."""
        name = request.url.path.removeprefix("/api").strip("/")
        c = self.console
        data = {"workers": c.workers, "outbox": c.outbox, "definitions": c.definitions}
        found = c.dead_letters() if name == "dead-letters" else await data[name]()
        if wants_json(request):
            return JSONResponse(found)
        render = {"workers": ops_pages.workers_page, "outbox": ops_pages.outbox_page,
                  "dead-letters": ops_pages.dead_letters_page,
                  "definitions": ops_pages.definitions_page}[name]
        return page(request, *render(found, read_only=c.read_only))

    async def metrics(self, request: Request) -> Response:
        return Response(await prometheus_text(self.console),
                        media_type="text/plain; version=0.0.4; charset=utf-8")
