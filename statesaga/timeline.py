"""A saga's history as a person reads it: one line per transition, compensations marked,
a parallel group's branches named beside it: `book[book_flight]`, and its sub-sagas (the
child sagas "<saga id>/<step>") named at the step that runs them, with how each ended."""

from __future__ import annotations

from collections.abc import Sequence

from .records import MIRROR_PREFIX, TERMINALS, Kind, SagaRecord, Transition

_MARKS = {"succeed": " ", "start": " ", "retry": "↻", "retry_unknown": "↻", "fail": "✗",
          "timeout": "⏱", "abort": "■"}


def format_timeline(record: SagaRecord, *, times: bool = True,
                    children: Sequence[SagaRecord] = (), parent: SagaRecord | None = None
                    ) -> str:
    """The saga's timeline: time, from -> to, event, step, attempt, duration, error.

    `children`: the records of its sub-sagas, named where their step starts and is undone,
    and listed at the end; `parent`: the saga it is a sub-saga of, named at the end.
    """
    start = record.history[0].at if record.history else record.created_at
    kids = {c.saga_id.rpartition("/")[2]: c for c in children
            if c.saga_id.rpartition("/")[0] == record.saga_id}
    rows = []
    for t in record.history:
        mark = _MARKS.get(t.event, " ")
        if (t.source or "").startswith(MIRROR_PREFIX) and t.event == "succeed":
            mark = "↩"  # a compensation done
        offset = f"+{(t.at - start).total_seconds() * 1000:.1f} ms" if times else ""
        took = "" if t.duration is None else f"{t.duration * 1000:.1f} ms"
        note = t.reason or t.error or _child_note(t, kids)
        source, dest = where(t)
        rows.append((mark, offset, source, dest, t.event, t.step or "",
                     "" if t.attempt is None else str(t.attempt), took, note))
    widths = [max(len(r[i]) for r in rows) for i in range(8)] if rows else [0] * 8
    lines = [f"saga {record.saga_id!r} ({record.name} {record.version})"]
    header = ("", "time" if times else "", "from", "to", "event", "step", "try", "took", "")
    widths = [max(w, len(h)) for w, h in zip(widths, header[:8], strict=True)]
    for r in (header, *rows):
        cells = [r[i].rjust(widths[i]) if i == 1 else r[i].ljust(widths[i]) for i in range(8)]
        line = (f"{cells[0]} {cells[1]}  {cells[2]} → {cells[3]}  {cells[4]}  {cells[5]}  "
                f"{r[6].rjust(widths[6])}  {r[7].rjust(widths[7])}")
        lines.append((line + ("  " + _short(r[8]) if r[8] else "")).rstrip())
    lines.append(f"status: {record.status.value.upper()} in {record.state}")
    if record.error:
        lines.append(f"error: {record.error}")
    if parent is not None:
        step = record.saga_id.rpartition("/")[2]
        lines.append(f"sub-saga of {parent.saga_id!r} ({parent.name}), its step {step}: "
                     f"{parent.status.value.upper()} in {parent.state}")
    if kids:
        lines.append("sub-sagas:")
        lines += [f"  {step}: {c.saga_id!r} ({c.name} {c.version}) "
                  f"{c.status.value.upper()} in {c.state}" for step, c in kids.items()]
    return "\n".join(lines)


def _child_note(t: Transition, kids: dict[str, SagaRecord]) -> str:
    """At a sub-saga step: the child saga it starts, or has reverted (its compensation)."""
    if t.source == t.dest:
        return ""
    if t.dest in kids:
        return f"runs sub-saga {kids[t.dest].saga_id!r}"
    step = (t.source or "").removeprefix(MIRROR_PREFIX)
    if t.source != step and step in kids and t.kind is Kind.MIRROR:
        return f"sub-saga {kids[step].saga_id!r} reverted"
    return ""


def where(t: Transition) -> tuple[str, str]:
    """The transition's source and dest as read: a branch of a parallel group (or of its
    compensation) named in brackets after it, `book[book_flight]`, where the move is that
    branch's. A step is the state it runs in, or the state its mirror undoes: a step of
    another name in a state is a branch there (read from the record alone, so that a
    saga whose definition is not known reads the same)."""
    source = t.source or "\u00b7"
    home = source.removeprefix(MIRROR_PREFIX)
    if t.step is None or t.step == home or source in TERMINALS or t.source is None:
        return source, t.dest
    branch = f"{source}[{t.step}]"
    return branch, branch if t.kind is Kind.RETRY else t.dest


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
