"""The operators' other pages: workers and their leases, the outbox, dead letters, definitions.

Each says what to do about what it shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .html import cut, e, layout, saga_url, table


def _at(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def workers_page(data: Mapping[str, Any], *, read_only: bool) -> tuple[str, str]:
    now = data["now"]
    rows = []
    for w in data["workers"]:
        ids = ", ".join(f'<a class="id" href="{e(saga_url(s["saga_id"]))}">'
                        f'{e(cut(s["saga_id"], 40))}</a>' for s in w["sagas"][:5])
        more = f" and {len(w['sagas']) - 5} more" if len(w["sagas"]) > 5 else ""
        until = w["lease_until"]
        state = (f"live, {until - now:.0f} s left" if until > now else
                 f"expired {now - until:.0f} s ago: another worker takes these over")
        rows.append((f"<code>{e(cut(w['owner'], 80))}</code>", str(len(w["sagas"])),
                     str(w["live"]), e(_at(until)), e(state), ids + e(more)))
    live = ('<p>A worker holds each saga it runs under a lease it renews while the saga runs. '
            "A worker that died leaves its leases to expire (15 s by default); then any "
            "worker, or <code>statesaga recover</code>, takes its sagas over. A lease that "
            "stays live while its saga does not move means a worker is stuck in a step: look "
            "at that worker's process.</p>"
            + table(("worker", "sagas held", "live leases", "latest lease until", "state",
                     "sagas"), rows))
    return layout("Workers and leases", live, read_only=read_only), live


def outbox_page(data: Mapping[str, Any], *, read_only: bool) -> tuple[str, str]:
    unsent, age = data["unsent"], data["oldest_age_seconds"]
    if unsent == 0:
        state = '<div class="ok">Every message in the outbox was sent.</div>'
    else:
        state = (f'<div class="{"bad" if age > 60 else "note"}">{unsent:,} message(s) not '
                 f"sent yet; the oldest was written {e(data['oldest_unsent_at'])} "
                 f"({age:,.1f} s ago).</div>")
    live = (state + "<p>Messages that sagas and participants publish are written to the "
            "outbox in the same transaction as their state, then sent by a relay "
            "(<code>Choreography.relay()</code>, or any process running "
            "<code>Choreography.serve()</code>). A backlog that grows or ages means no relay "
            "runs, or the bus refuses it: start one, and check the bus (its logs say "
            "<code>relay.publish_failed</code>).</p>")
    return layout("Outbox", live, read_only=read_only), live


def dead_letters_page(data: Mapping[str, Any], *, read_only: bool) -> tuple[str, str]:
    letters = data["letters"]
    if letters is None:
        queue = data["queue"] or "<prefix>.dead (statesaga.dead by default)"
        live = ('<div class="note">'
                + ("No bus was given to this console, so it cannot show dead letters. "
                   if data["bus"] is None else
                   f"The {e(data['bus'])} keeps dead letters in its broker, where reading "
                   "them would take them off the queue. ")
                + "</div><p>Events a bus could not deliver after its delivery limit (or "
                "that no saga can take) are dead-lettered. For RabbitMQ they wait in the "
                f"queue <code>{e(queue)}</code>: see them in the RabbitMQ management UI, "
                f"with <code>rabbitmqadmin get queue={e(queue)} count=20</code>, or take them "
                "in code with <code>await bus.take_dead_letters()</code>. To list an "
                "in-process bus's here, pass it: <code>statesaga.web.app(store, bus=bus)</code>."
                "</p>")
    else:
        rows = [(e(d["type"]), f'<code>{e(d["message_id"])}</code>',
                 f'<a class="id" href="{e(saga_url(d["correlation_id"]))}">'
                 f'{e(cut(d["correlation_id"], 40))}</a>' if d["correlation_id"] else "none",
                 e(cut(d["error"], 200))) for d in letters]
        live = ("<p>Fix what the error names, then publish the event again (its message "
                "id lets consumers drop it if it was applied meanwhile).</p>"
                + table(("type", "message id", "saga", "error"), rows))
    return layout("Dead letters", live, read_only=read_only), live


def definitions_page(data: Mapping[str, Any], *, read_only: bool) -> tuple[str, str]:
    rows = []
    for d in data["definitions"]:
        link = f'/?{_query(name=d["name"], version=d["version"])}'
        what = ("registered" if d["registered"] else
                '<strong>not registered</strong>: register this version (keep the old code '
                "beside the new): <code>--saga MODULE:ATTR</code>, "
                "<code>$STATESAGA_SAGAS</code>, an entry point in the group "
                "<code>statesaga.sagas</code>, or <code>app(store, sagas=[...])</code>; "
                "then <code>statesaga recover</code> finishes them")
        rows.append((e(d["name"]), f'<code>{e(d["version"])}</code>',
                     f'<a href="{e(link)}">{d["count"]:,}</a>', what))
    known = ", ".join(f'{e(r["name"])} <code>{e(r["version"])}</code>'
                      for r in data["registered"]) or "none"
    unregistered = sum(d["count"] for d in data["definitions"] if not d["registered"])
    state = (f'<div class="bad">{unregistered:,} unfinished or stuck saga(s) ran under a '
             "version that is not registered: no worker can finish them.</div>"
             if unregistered else
             '<div class="ok">Every unfinished or stuck saga has a registered definition.</div>')
    live = (state + f"<p>Registered here: {known}.</p>"
            + table(("saga", "version", "unfinished or stuck", "what to do"), rows))
    return layout("Definitions and versions", live, read_only=read_only), live


def _query(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params)
