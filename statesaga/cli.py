"""The `statesaga` command: run the demo, draw machines, and operate sagas in a store."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any

from .definition import SagaStateMachine
from .exceptions import SagaError
from .orchestrator import Orchestrator
from .records import SagaRecord, SagaStatus
from .timeline import format_timeline

DEFAULT_STORE = "sqlite:///sagas.db"
EXAMPLES = ("statesaga.examples.trip:trip", "statesaga.examples.payment:payment")


def load_machine(ref: str) -> SagaStateMachine:
    """`package.module:attr` -> the SagaStateMachine it names."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise SagaError(f"{ref!r} is not MODULE:ATTR (e.g. statesaga.examples.trip:trip)")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SagaError(f"cannot import {module_name!r} for {ref!r}: {exc}") from exc
    machine = getattr(module, attr, None)
    if not isinstance(machine, SagaStateMachine):
        raise SagaError(f"{ref!r} is not a SagaStateMachine (got {type(machine).__name__})")
    return machine


def _orchestrator(args: argparse.Namespace, refs: Sequence[str] = ()) -> Orchestrator:
    from .stores.urls import open_store

    sagas = [*EXAMPLES, *getattr(args, "saga", []), *refs]
    env = os.environ.get("STATESAGA_SAGAS", "")
    sagas += [s for s in env.split(",") if s]
    return Orchestrator(store=open_store(args.store), sagas=[load_machine(s) for s in sagas],
                        lease=getattr(args, "lease", 15.0))


async def _with(orch: Orchestrator, coro: Any) -> Any:
    try:
        return await coro
    finally:
        await orch.store.close()


def cmd_demo(args: argparse.Namespace) -> int:
    from .examples.trip import build_trip, trip_services
    from .stores.urls import open_store

    if args.choreography:
        record = asyncio.run(_choreography_demo(args.store, args.bus, args.fail_at))
        print(format_timeline(record))
        return 0

    services = trip_services()
    machine = build_trip(services)
    if args.fail_at:
        services.fail_at(args.fail_at)
    if args.stuck:
        services.fail_compensation(args.stuck)
    orch = Orchestrator(store=open_store(args.store))
    record = asyncio.run(_with(orch, orch.run(machine, {"flight": "LH1", "hotel": "Adlon",
                                                        "amount": 420})))
    print(format_timeline(record))
    print(f"calls: {', '.join(services.calls())}")
    return 0 if record.status is not SagaStatus.FAILED else 3


async def _choreography_demo(store_url: str, bus_url: str, fail_at: str | None) -> SagaRecord:
    """The trip as a choreography: participants and the saga talk only through the bus."""
    from .bus_memory import InMemoryBus
    from .choreography import Choreography
    from .examples.trip_choreography import STATES, build_participants, build_trip_choreography
    from .stores.urls import open_store

    if fail_at is not None and fail_at not in STATES:
        raise SagaError(f"--fail-at for the choreography is one of {', '.join(STATES)}, "
                        f"not {fail_at!r}")
    bus: Any
    if bus_url == "memory://":
        bus = InMemoryBus()
    else:
        from .bus_rabbitmq import RabbitMQBus

        bus = RabbitMQBus(bus_url, exchange="statesaga-demo", prefix="statesaga-demo")
    store = open_store(store_url)
    machine = build_trip_choreography()
    orch = Orchestrator(store=store, sagas=[machine])
    choreography = Choreography(orch, bus)
    stop = asyncio.Event()
    try:
        for participant in build_participants(store):
            await participant.listen(bus)
        serving = asyncio.create_task(choreography.serve([machine], stop, poll=0.02))
        record = await choreography.start(machine, {"fail_at": fail_at} if fail_at else {})
        while not record.is_terminal:
            await asyncio.sleep(0.02)
            record = await store.load(record.saga_id)
        stop.set()
        await serving
        return record
    finally:
        stop.set()
        if bus_url == "memory://":
            await bus.close()
        else:  # a demo leaves nothing behind on the broker
            await bus.delete_everything(bus.queues)
        await store.close()


def cmd_render(args: argparse.Namespace) -> int:
    from .diagrams import render

    machine = load_machine(args.machine)
    path = render(machine, args.output or f"{machine.name}.svg")
    print(path)
    return 0


def _row(r: SagaRecord) -> dict[str, Any]:
    return {"saga_id": r.saga_id, "name": r.name, "version": r.version, "state": r.state,
            "status": r.status.value, "updated_at": r.updated_at.isoformat(),
            "error": r.error}


def cmd_list(args: argparse.Namespace) -> int:
    from .stores.urls import open_store

    store = open_store(args.store)
    status = SagaStatus(args.status) if args.status else None

    async def go() -> list[SagaRecord]:
        try:
            return await store.list(status=status, name=args.name, limit=args.limit)
        finally:
            await store.close()

    records = asyncio.run(go())
    if args.json:
        print(json.dumps([_row(r) for r in records], indent=2))
        return 0
    cols = ("saga_id", "name", "status", "state", "updated_at")
    rows = [[str(_row(r)[c]) for c in cols] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(cols)]
    for row in [list(cols), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print(f"({len(records)} saga{'s' if len(records) != 1 else ''})")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    orch = _orchestrator(args)
    record = asyncio.run(_with(orch, orch.get(args.saga_id)))
    if args.json:
        row = _row(record) | {"history": [
            {"at": t.at.isoformat(), "source": t.source, "dest": t.dest, "event": t.event,
             "step": t.step, "attempt": t.attempt, "error": t.error, "duration": t.duration,
             "reason": t.reason, "worker": t.worker} for t in record.history],
            "data": dict(record.data), "results": dict(record.results)}
        print(json.dumps(row, indent=2))
    else:
        print(format_timeline(record))
    if args.diagram:
        from .diagrams import render

        print(render(orch.definition(record), args.diagram, record=record))
    return 0


def cmd_recover(args: argparse.Namespace) -> int:
    orch = _orchestrator(args, args.machines)

    def progress(n: int) -> None:
        if n % 100 == 0:
            print(f"  recovered {n} sagas…", file=sys.stderr)

    report = asyncio.run(_with(orch, orch.recover(progress=progress)))
    print(f"recovered {len(report.recovered)} saga(s)")
    for status in SagaStatus:
        n = sum(1 for r in report.recovered if r.status is status)
        if n:
            print(f"  {status.value}: {n}")
    for line in report.unregistered:
        print(f"left alone: {line}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    orch = _orchestrator(args)
    record = asyncio.run(_with(orch, orch.retry(args.saga_id, reason=args.reason)))
    print(format_timeline(record))
    return 0 if record.status is not SagaStatus.FAILED else 3


def cmd_abort(args: argparse.Namespace) -> int:
    orch = _orchestrator(args)
    record = asyncio.run(_with(orch, orch.abort(args.saga_id, reason=args.reason)))
    print(format_timeline(record))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    orch = _orchestrator(args, args.machines)

    async def go() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"worker {orch.owner} on {orch.store.url}: {len(orch._definitions)} "
              "definition(s); SIGTERM finishes the current steps and exits", file=sys.stderr)
        return await orch.work(concurrency=args.concurrency, poll=args.poll, stop=stop)

    driven = asyncio.run(_with(orch, go()))
    print(f"worker stopped after driving {driven} saga(s)", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="statesaga", description=__doc__)
    parser.add_argument("--store", default=os.environ.get("STATESAGA_STORE", DEFAULT_STORE),
                        help="store URL: memory://, sqlite:///path.db, postgresql://... "
                             f"(default: $STATESAGA_STORE or {DEFAULT_STORE})")
    parser.add_argument("--saga", action="append", default=[], metavar="MODULE:ATTR",
                        help="a saga definition to register (repeatable; also "
                             "$STATESAGA_SAGAS, comma-separated)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every transition (structlog, to stderr)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the trip saga and print its timeline")
    p.add_argument("--fail-at", metavar="STEP", help="make this step fail (e.g. charge_payment)")
    p.add_argument("--stuck", metavar="STEP", help="make this step's compensation always fail")
    p.add_argument("--choreography", action="store_true",
                   help="run the trip as a choreography over an event bus "
                        "(--fail-at flight, hotel or payment)")
    p.add_argument("--bus", default=os.environ.get("STATESAGA_BUS", "memory://"),
                   metavar="URL", help="memory:// (default) or amqp://user:pass@host/")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("render", help="draw a saga definition (svg, png, pdf or dot)")
    p.add_argument("machine", metavar="MODULE:ATTR")
    p.add_argument("-o", "--output", metavar="PATH")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("list", help="list sagas")
    p.add_argument("--status", choices=[s.value for s in SagaStatus])
    p.add_argument("--name")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="a saga's timeline")
    p.add_argument("saga_id")
    p.add_argument("--json", action="store_true")
    p.add_argument("--diagram", metavar="PATH", help="also draw the saga's path")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("recover", help="finish every unfinished saga")
    p.add_argument("machines", nargs="*", metavar="MODULE:ATTR")
    p.set_defaults(func=cmd_recover)

    for name, func, text in (("retry", cmd_retry, "re-run the failed compensation of a stuck "
                                                   "saga"),
                             ("abort", cmd_abort, "compensate a saga now")):
        p = sub.add_parser(name, help=text)
        p.add_argument("saga_id")
        p.add_argument("--reason", help="written to the saga's history")
        p.set_defaults(func=func)

    p = sub.add_parser("worker", help="claim and run sagas until SIGTERM")
    p.add_argument("machines", nargs="*", metavar="MODULE:ATTR")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--lease", type=float, default=15.0, metavar="SECONDS",
                   help="how long a dead worker's sagas stay locked before others take "
                        "them over (default 15)")
    p.add_argument("--poll", type=float, default=0.5)
    p.set_defaults(func=cmd_worker)
    return parser


def _configure_logs(verbose: bool) -> None:
    """The command is an application: it shows warnings, and every transition with -v."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if verbose else logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logs(args.verbose)
    try:
        return int(args.func(args))
    except SagaError as exc:
        print(f"statesaga: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
