"""The console's HTML: one page function per route, every value escaped, no JavaScript needed.

A small script refreshes the live part of a page (`#live`) every few seconds when nothing on
the page has the focus; without it the pages work the same, reloaded by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
header{background:#263238;color:#fff;padding:.6em 1.2em;display:flex;gap:1.4em;
 align-items:baseline;flex-wrap:wrap}
header a{color:#cfd8dc;text-decoration:none}header strong a{color:#fff}
main{padding:1em 1.2em;max-width:1400px}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5em 0 1em}
th,td{border-bottom:1px solid #e0e0e0;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#eceff1;font-weight:600}
code,pre{font:12px/1.4 ui-monospace,monospace}pre{white-space:pre-wrap;word-break:break-all;
 background:#fff;border:1px solid #e0e0e0;padding:.6em;max-height:24em;overflow:auto}
.id{word-break:break-all}
.counts{display:flex;gap:.6em;flex-wrap:wrap;margin:.4em 0}
.counts a{padding:.3em .7em;border-radius:1em;background:#eceff1;color:#1d1d1f;
 text-decoration:none}.counts a.on{outline:2px solid #263238}
.s-failed,.counts .stuck{background:#f6dcdc}.s-running,.counts .running{background:#e3f2fd}
.s-compensating,.counts .compensating{background:#fff3e0}
.s-completed,.counts .completed{background:#dff0d8}
.s-compensated,.counts .compensated{background:#dce7f5}
.note{background:#fffde7;border:1px solid #f0e68c;padding:.5em .8em;margin:.6em 0}
.bad{background:#fdecea;border:1px solid #f5c6cb;padding:.5em .8em;margin:.6em 0}
.ok{background:#e8f5e9;border:1px solid #c8e6c9;padding:.5em .8em;margin:.6em 0}
form.filters{display:flex;gap:.5em;flex-wrap:wrap;align-items:end}
form.filters label{display:flex;flex-direction:column;font-size:12px}
.diagram{background:#fff;border:1px solid #e0e0e0;overflow:auto;max-height:60em}
.actions form{display:inline-block;margin-right:1.5em;vertical-align:top}
"""

SCRIPT = """
(function(){
  var live = document.getElementById('live');
  if (!live || !window.fetch) return;
  setInterval(function(){
    var focused = document.activeElement;
    if (document.hidden || (focused && /INPUT|SELECT|TEXTAREA|BUTTON/.test(focused.tagName)))
      return;
    fetch(location.href, {headers: {'X-Console-Partial': '1'}}).then(function(r){
      return r.ok ? r.text() : null;
    }).then(function(text){
      if (text !== null && text !== live.innerHTML) live.innerHTML = text;
    }).catch(function(){});
  }, %d);
})();
"""

NAV = (("/", "Sagas"), ("/workers", "Workers"), ("/outbox", "Outbox"),
       ("/dead-letters", "Dead letters"), ("/definitions", "Definitions"),
       ("/metrics", "Metrics"))


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(iso: str | None) -> str:
    """An ISO time as people read it, to the second, in UTC (the JSON keeps it whole)."""
    return "" if not iso else iso[:19].replace("T", " ") + " UTC"


def cut(text: str | None, limit: int = 80) -> str:
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def saga_url(saga_id: str, suffix: str = "") -> str:
    """The saga's page (or `suffix`'s): the id as one path segment, '/' included."""
    return f"/sagas/{quote(saga_id, safe='')}{suffix}"


def layout(title: str, live: str, *, read_only: bool, refresh_ms: int = 3000,
           before: str = "") -> str:
    """A whole page: `live` is what the script refreshes; `before` stays put (forms)."""
    nav = "".join(f'<a href="{href}">{e(text)}</a>' for href, text in NAV)
    mode = ('<div class="note">Read-only: this console was started without a token, so it '
            "cannot retry or abort sagas. Start it with <code>statesaga web --token T</code> "
            "(or <code>statesaga.web.app(store, token=...)</code>) to allow them.</div>"
            if read_only else "")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} '
            f'· statesaga</title><meta name="viewport" content="width=device-width">'
            f"<style>{CSS}</style></head><body><header><strong><a href=\"/\">statesaga</a>"
            f"</strong>{nav}</header><main>{mode}<h1>{e(title)}</h1>{before}"
            f'<div id="live">{live}</div></main><script>{SCRIPT % refresh_ms}</script>'
            "</body></html>")


def table(head: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A table of cells that are HTML already (escape them first)."""
    rows = list(rows)
    if not rows:
        return "<p>None.</p>"
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def filters_form(params: Mapping[str, str], statuses: Iterable[str]) -> str:
    def field(name: str, label: str, kind: str = "text") -> str:
        return (f'<label>{e(label)}<input type="{kind}" name="{name}" '
                f'value="{e(params.get(name, ""))}"></label>')

    options = "".join(f'<option value="{s}"{" selected" if params.get("status") == s else ""}>'
                      f"{s}</option>" for s in ("", *statuses))
    return ('<form class="filters" method="get" action="/">'
            f'<label>status<select name="status">{options}</select></label>'
            + field("name", "name") + field("version", "version") + field("state", "state")
            + field("from", "created from (UTC)") + field("to", "created before (UTC)")
            + field("error", "error contains") + field("id", "id starts with")
            + '<button type="submit">Filter</button> <a href="/">clear</a></form>')


def list_page(data: Mapping[str, Any], params: Mapping[str, str], *, read_only: bool,
              error: str | None = None) -> tuple[str, str]:
    """(the whole page, its live part) for the saga list."""
    status = params.get("status", "")
    labels = {"stuck": "failed"}
    cap = data.get("counts_cap")
    counts = "".join(
        f'<a class="{e(label)}{" on" if status == labels.get(label, label) else ""}" '
        f'href="/?{urlencode({"status": labels.get(label, label)})}">{e(label)}: '
        f'{f"{cap:,}+" if cap is not None and n > cap else f"{n:,}"}</a>'
        for label, n in data.get("counts", {}).items())
    rows = [(f'<a class="id" href="{e(saga_url(s["saga_id"]))}">{e(cut(s["saga_id"], 60))}'
             "</a>", e(s["name"]), f'<code>{e(cut(s["version"], 14))}</code>',
             f'<span class="s-{e(s["status"])}">{e(s["status"])}</span>', e(cut(s["state"])),
             e(when(s["created_at"])), e(when(s["updated_at"])), e(cut(s["error"], 90)))
            for s in data.get("sagas", [])]
    live = f'<div class="counts">{counts}</div>'
    if error:
        live += f'<div class="bad">{e(error)}</div>'
    live += table(("saga", "name", "version", "status", "state", "created", "updated",
                   "error"), rows)
    if data.get("next"):
        more = {k: v for k, v in params.items() if v and k != "after"} | {"after": data["next"]}
        live += f'<p><a rel="next" href="/?{e(urlencode(more))}">Older sagas →</a></p>'
    before = filters_form(params, ("running", "compensating", "failed", "pending",
                                   "completed", "compensated"))
    return layout("Sagas", live, read_only=read_only, before=before), live


def values(title: str, mapping: Mapping[str, Any]) -> str:
    text = json.dumps(mapping, indent=2, ensure_ascii=False, default=str)
    return f"<h3>{e(title)}</h3><pre>{e(text)}</pre>"


def saga_page(saga: Mapping[str, Any], *, svg: str | None, timeline: str, advice: str,
              flash: str | None, register_hint: str, read_only: bool) -> tuple[str, str]:
    sid = saga["saga_id"]
    facts = table(("", ""), [
        ("id", f'<code class="id">{e(sid)}</code>'),
        ("saga", f'{e(saga["name"])} <code>{e(saga["version"])}</code>'),
        ("status", f'<span class="s-{e(saga["status"])}">{e(saga["status"])}</span> in '
                   f'<code>{e(saga["state"])}</code>'),
        ("created / updated", f'{e(when(saga["created_at"]))} / '
                              f'{e(when(saga["updated_at"]))}'),
        ("worker", e(saga["owner"] or "none") + (f' (lease until {e(saga["lease_until"])})'
                                                  if saga["owner"] else "")),
        ("error", f'<span class="id">{e(saga["error"] or "none")}</span>'),
        *kin_rows(saga)])
    steps = table(("step", "forward", "tries", "undo", "undo tries"), [
        (f'<code>{e(s["step"])}</code>', e(s["forward"]), e(s["attempts"] or ""),
         e(s["undo"]), e(s["undo_attempts"] or "")) for s in saga["steps"]])
    drawing = (f'<h2>Diagram</h2><div class="diagram">{svg}</div><p><a href="'
               f'{e(saga_url(sid, "/diagram.svg"))}">diagram.svg</a> · bold: the path taken; '
               "dashed pink: the undo that would run now.</p>" if svg is not None else
               f'<h2>Diagram</h2><div class="note">The definition {e(saga["name"])} version '
               f'<code>{e(saga["version"])}</code> is not registered with this console, so '
               f"only the timeline is shown. {e(register_hint)}</div>")
    live = (("" if not flash else f'<div class="ok">{e(flash)}</div>')
            + (f'<div class="bad"><strong>Stuck.</strong> {advice}</div>' if saga["stuck"]
               else "")
            + facts + drawing + "<h2>Steps</h2>" + steps + sub_sagas(saga)
            + f"<h2>Timeline</h2><pre>{e(timeline)}</pre>"
            + values("Data", saga["data"]) + values("Results", saga["results"]))
    before = "" if read_only else actions(saga)
    return layout(f"Saga {cut(sid, 60)}", live, read_only=read_only, before=before), live


def kin_rows(saga: Mapping[str, Any]) -> list[tuple[str, str]]:
    """A sub-saga's parent, linked, among its facts."""
    parent = saga.get("parent")
    if not parent:
        return []
    step = saga["saga_id"].rpartition("/")[2]
    return [("sub-saga of", f'<a class="id" href="{e(saga_url(parent["saga_id"]))}">'
             f'{e(cut(parent["saga_id"], 60))}</a> ({e(parent["name"])}), its step '
             f'<code>{e(step)}</code>: <span class="s-{e(parent["status"])}">'
             f'{e(parent["status"])}</span>')]


def sub_sagas(saga: Mapping[str, Any]) -> str:
    """The saga's sub-sagas, each linked to its own page; nothing when it has none."""
    children = saga.get("children") or []
    if not children:
        return ""
    return "<h2>Sub-sagas</h2>" + table(("step", "saga", "name", "status", "state"), [
        (f'<code>{e(c["step"])}</code>', f'<a class="id sub-saga" href="'
         f'{e(saga_url(c["saga_id"]))}">{e(cut(c["saga_id"], 60))}</a>', e(c["name"]),
         f'<span class="s-{e(c["status"])}">{e(c["status"])}</span>', e(cut(c["state"])))
        for c in children])


def actions(saga: Mapping[str, Any]) -> str:
    """The retry and abort forms: a reason, and the console's token (a cross-site form cannot
    know it, so a forged post is refused)."""
    forms = []
    for name, allowed, text in (("retry", saga["actions"]["retry"], "Retry the compensation"),
                                ("abort", saga["actions"]["abort"], "Abort (compensate now)")):
        if not allowed:
            continue
        forms.append(
            f'<form method="post" action="{e(saga_url(saga["saga_id"], "/" + name))}">'
            f'<label>Reason <input name="reason" required maxlength="2000" size="30" '
            f'id="{name}-reason"></label> <label>Token <input type="password" name="token" '
            f'required id="{name}-token" autocomplete="current-password"></label> '
            f'<button type="submit" id="{name}-button">{e(text)}</button></form>')
    return f'<div class="actions">{"".join(forms)}</div>' if forms else ""


def message_page(title: str, text: str, *, read_only: bool, hint: str = "") -> str:
    body = f'<div class="bad">{e(text)}</div>' + (f"<p>{e(hint)}</p>" if hint else "")
    return layout(title, body, read_only=read_only)
