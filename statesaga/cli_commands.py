"""The `statesaga` commands themselves; `cli.py` parses the command line and calls one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .cli_sagas import Found, command_line, find_sagas, load_machine
from .exceptions import SagaError
from .orchestrator import Orchestrator
from .orchestrator_children import family
from .records import SagaRecord, SagaStatus
from .stores.base import SagaStore
from .stores.reads import SagaQuery, SagaSummary, reader
from .timeline import format_timeline

CELL = 40  # a list's cells are cut to this many characters (ids can be 10,000 long)
VALUE = 80  # `show` cuts each value of data and results to this many, unless --full


def open_existing(url: str) -> SagaStore:
    """The store at `url`, which must exist already: a command that only reads (or acts on
    sagas in it) never creates one, e.g. from a mistyped path."""
    from .stores.urls import open_store

    store = open_store(url)
    path = getattr(store, "path", None)
    if path is not None and path != ":memory:" and not os.path.exists(path):
        raise SagaError(f"no saga store at {os.path.abspath(path)} (from {store.url}): check "
                        "the path (--store or $STATESAGA_STORE); this command never creates "
                        "a store, `statesaga demo` or a worker does")
    return store


def _orchestrator(args: argparse.Namespace, refs: list[str] | None = None
                  ) -> tuple[Orchestrator, list[Found]]:
    found = find_sagas([*args.saga, *(refs or [])])
    orch = Orchestrator(store=open_existing(args.store), sagas=[f.machine for f in found],
                        lease=getattr(args, "lease", 15.0))
    return orch, found


async def _with(store: SagaStore, coro: Any) -> Any:
    try:
        return await coro
    finally:
        await store.close()


def stuck_advice(args: argparse.Namespace, found: list[Found], record: SagaRecord) -> str:
    """What to run for a stuck saga, as a command that works as written."""
    retry = command_line(args.store, args.store_from_env, found, record.name, record.version,
                         "retry", record.saga_id, "--reason", "what was fixed")
    lines = ["stuck: fix what makes the compensation fail, then retry it with:", f"  {retry}"]
    if "$STATESAGA_STORE" in retry:
        lines.append("  (with STATESAGA_STORE set to the store's URL: its password is never "
                     "printed)")
    if "MODULE:ATTR" in retry:
        from .cli_sagas import HOW_TO_REGISTER

        lines.append(f"  (its definition is not known here: {HOW_TO_REGISTER})")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from .examples.demo import choreography_demo
    from .examples.trip import build_trip, trip_services
    from .stores.urls import open_store

    if args.choreography:
        record = asyncio.run(choreography_demo(args.store, args.bus, args.fail_at))
        print(format_timeline(record))
        return 0
    services = trip_services()
    machine = build_trip(services)
    if args.fail_at:
        services.fail_at(args.fail_at)
    if args.stuck:
        services.fail_compensation(args.stuck)
    orch = Orchestrator(store=open_store(args.store))
    record = asyncio.run(_with(orch.store, orch.run(
        machine, {"flight": "LH1", "hotel": "Adlon", "amount": 420})))
    print(format_timeline(record))
    print(f"calls: {', '.join(services.calls())}")
    if record.is_stuck:
        print(stuck_advice(args, find_sagas(args.saga), record))
    return 0 if record.status is not SagaStatus.FAILED else 3


def cmd_render(args: argparse.Namespace) -> int:
    from .diagrams import render, to_mermaid

    machine = load_machine(args.machine)
    output = args.output or f"{machine.name}.svg"
    if output.lower().endswith(".mmd"):
        with open(output, "w", encoding="utf-8") as f:
            f.write(to_mermaid(machine))
        print(output)
        return 0
    print(render(machine, output))
    return 0


def _row(r: SagaSummary | SagaRecord) -> dict[str, Any]:
    return {"saga_id": r.saga_id, "name": r.name, "version": r.version, "state": r.state,
            "status": r.status.value, "created_at": r.created_at.isoformat(),
            "updated_at": r.updated_at.isoformat(), "error": r.error}


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cmd_list(args: argparse.Namespace) -> int:
    try:
        query = SagaQuery(status=SagaStatus(args.status) if args.status else None,
                          name=args.name, version=args.version, state=args.state,
                          error=args.error, id_prefix=args.id_prefix, after=args.after,
                          limit=args.limit)
    except ValueError as exc:
        raise SagaError(f"cannot list: {exc}") from exc
    store = open_existing(args.store)
    page = asyncio.run(_with(store, reader(store).query_sagas(query)))
    if args.json:
        print(json.dumps([_row(s) for s in page.sagas], indent=2))
    else:
        cols = ("saga_id", "name", "status", "state", "updated_at")
        rows = [[cut(str(_row(s)[c]), CELL) for c in cols] for s in page.sagas]
        widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]
        for row in [list(cols), *rows]:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        n = len(page.sagas)
        print(f"({n} saga{'s' if n != 1 else ''}{', more after' if page.next else ''})")
    if page.next is not None:
        print(f"next page: statesaga list ... --after {page.next}", file=sys.stderr)
    return 0


def _values(title: str, values: Mapping[str, Any], full: bool) -> list[str]:
    lines = [f"{title}:" + ("" if values else " (none)")]
    for key, value in values.items():
        text = json.dumps(value, ensure_ascii=False, default=str)
        lines.append(f"  {key if full else cut(key, CELL)}: {text if full else cut(text, VALUE)}")
    return lines


def cmd_show(args: argparse.Namespace) -> int:
    orch, found = _orchestrator(args)

    async def read() -> tuple[SagaRecord, SagaRecord | None, list[SagaRecord]]:
        record = await orch.get(args.saga_id)
        return (record, *await family(orch.store, record))

    record, parent, children = asyncio.run(_with(orch.store, read()))
    if args.json:
        row = _row(record) | {
            "parent": None if parent is None else parent.saga_id,
            "children": [_row(c) for c in children], "history": [
            {"at": t.at.isoformat(), "source": t.source, "dest": t.dest, "event": t.event,
             "step": t.step, "attempt": t.attempt, "error": t.error, "duration": t.duration,
             "reason": t.reason, "worker": t.worker} for t in record.history],
            "data": dict(record.data), "results": dict(record.results)}
        print(json.dumps(row, indent=2))
    else:
        print(format_timeline(record, children=children, parent=parent))
        print("\n".join(_values("data", record.data, args.full)
                        + _values("results", record.results, args.full)))
        if record.is_stuck:
            print(stuck_advice(args, found, record))
    if args.diagram:
        from .diagrams import render
        from .diagrams.subsagas import drawable

        machine = orch.definition(record)
        print(render(machine, args.diagram, record=record,
                     children=drawable(machine, record, children)))
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    orch, _ = _orchestrator(args, args.machines)

    def progress(n: int) -> None:
        if n % 100 == 0:
            print(f"  recovered {n} sagas…", file=sys.stderr)

    async def go() -> tuple[Any, list[SagaSummary]]:
        report = await orch.recover(progress=progress)
        held = await reader(orch.store).leased(now=orch.clock.time())
        return report, [s for s in held if s.owner != orch.owner and not s.is_stuck]

    report, held = asyncio.run(_with(orch.store, go()))
    print(f"recovered {len(report.recovered)} saga(s)")
    for status in SagaStatus:
        n = sum(1 for r in report.recovered if r.status is status)
        if n:
            print(f"  {status.value}: {n}")
    for line in report.unregistered:
        print(f"left alone: {line}")
    for line in report.failed:  # the others were recovered: still a success
        print(f"could not go on: {line}")
    print("\n".join(held_by_others(held, orch.clock.time())))
    return 0


def held_by_others(held: list[SagaSummary], now: float) -> list[str]:
    """One line per worker holding sagas under a live lease: how many, until when."""
    if not held:
        return []
    by_owner: dict[str, list[SagaSummary]] = defaultdict(list)
    for s in held:
        by_owner[s.owner or "?"].append(s)
    lines = [f"held by other workers (left to them; taken over if their lease expires): "
             f"{len(held)} saga(s)"]
    for owner, sagas in sorted(by_owner.items()):
        until = max(s.lease_until or now for s in sagas)
        at = datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        ids = ", ".join(repr(cut(s.saga_id, CELL)) for s in sagas[:3])
        more = f" and {len(sagas) - 3} more" if len(sagas) > 3 else ""
        lines.append(f"  {cut(owner, 80)}: {len(sagas)} saga(s) ({ids}{more}), lease until "
                     f"{at} (in {until - now:.0f} s)")
    return lines


def cmd_retry(args: argparse.Namespace) -> int:
    orch, found = _orchestrator(args)
    record = asyncio.run(_with(orch.store, orch.retry(args.saga_id, reason=args.reason)))
    print(format_timeline(record))
    if record.is_stuck:
        print(stuck_advice(args, found, record))
    return 0 if record.status is not SagaStatus.FAILED else 3


def cmd_abort(args: argparse.Namespace) -> int:
    orch, _ = _orchestrator(args)
    record = asyncio.run(_with(orch.store, orch.abort(args.saga_id, reason=args.reason)))
    print(format_timeline(record))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .stores.urls import open_store

    found = find_sagas([*args.saga, *args.machines])
    orch = Orchestrator(store=open_store(args.store), sagas=[f.machine for f in found],
                        lease=args.lease)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"worker {orch.owner} on {orch.store.url}: {len(found)} definition(s); "
              "SIGTERM finishes the current steps and exits", file=sys.stderr)
        return await orch.work(concurrency=args.concurrency, poll=args.poll, stop=stop)

    driven = asyncio.run(_with(orch.store, go()))
    print(f"worker stopped after driving {driven} saga(s)", file=sys.stderr)
    return 0


def cmd_web(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as exc:
        raise SagaError("the console needs uvicorn and starlette: pip install "
                        "'statesaga[web]'") from exc
    from .web import app

    found = find_sagas(args.saga)
    store = open_existing(args.store)
    asyncio.run(_with(store, reader(store).count_by_status()))  # reachable? say so now
    console = app(store, sagas=[f.machine for f in found], token=args.token)
    mode = "actions allowed with the token" if args.token else "read-only (no --token)"
    print(f"statesaga console on http://{args.host}:{args.port}/ for {store.url}: {mode}",
          file=sys.stderr)
    started = time.monotonic()
    uvicorn.run(console, host=args.host, port=args.port, log_level="warning")
    print(f"console stopped after {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0
