"""The `statesaga` command: run the demo, draw machines, and operate sagas in a store.

Global options (`--store`, `--saga`, `-v`) go before or after the command; commands that only
read never create a store; a closed pipe (`statesaga list | head -1`) ends it quietly.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .exceptions import SagaError, SagaNotRegistered
from .records import SagaStatus
from .stores.urls import redact

DEFAULT_STORE = "sqlite:///sagas.db"
_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")


class _Parser(argparse.ArgumentParser):
    """argparse, whose errors never show a store URL's password."""

    def error(self, message: str) -> NoReturn:
        super().error(_URL.sub(lambda m: redact(m.group(0)), message))


def _global_options(parser: argparse.ArgumentParser, *, late: bool) -> None:
    """The options every command takes, before it (`late` False) or after it (True)."""
    quiet: dict[str, Any] = {"default": argparse.SUPPRESS} if late else {}
    parser.add_argument("--store", metavar="URL", **quiet or {"default": None},
                        help="store URL: memory://, sqlite:///path.db, postgresql://... "
                             f"(default: $STATESAGA_STORE or {DEFAULT_STORE})")
    parser.add_argument("--saga", action="append", metavar="MODULE:ATTR",
                        dest="saga_late" if late else "saga", **quiet or {"default": []},
                        help="a saga definition to register (repeatable; also "
                             "$STATESAGA_SAGAS, comma-separated, and the entry points "
                             "'statesaga.sagas' of installed packages)")
    parser.add_argument("-v", "--verbose", action="store_true", **quiet or {"default": False},
                        help="log every transition (structlog, to stderr)")


def build_parser() -> argparse.ArgumentParser:
    from . import cli_commands as c

    parser = _Parser(prog="statesaga", description=__doc__.splitlines()[0])
    _global_options(parser, late=False)
    common = _Parser(add_help=False)
    _global_options(common, late=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = command("demo", c.cmd_demo, "run the trip saga and print its timeline")
    p.add_argument("--fail-at", metavar="STEP", help="make this step fail (e.g. charge_payment)")
    p.add_argument("--stuck", metavar="STEP", help="make this step's compensation always fail")
    p.add_argument("--choreography", action="store_true",
                   help="run the trip as a choreography over an event bus "
                        "(--fail-at flight, hotel or payment)")
    p.add_argument("--bus", default=os.environ.get("STATESAGA_BUS", "memory://"),
                   metavar="URL", help="memory:// (default) or amqp://user:pass@host/")

    p = command("render", c.cmd_render, "draw a saga definition (svg, png, pdf, dot or mmd)")
    p.add_argument("machine", metavar="MODULE:ATTR")
    p.add_argument("-o", "--output", metavar="PATH")

    p = command("list", c.cmd_list, "list sagas, newest first, a page at a time")
    p.add_argument("--status", choices=[s.value for s in SagaStatus])
    p.add_argument("--name")
    p.add_argument("--version")
    p.add_argument("--state")
    p.add_argument("--error", metavar="TEXT", help="sagas whose error contains TEXT")
    p.add_argument("--id-prefix", metavar="PREFIX")
    p.add_argument("--limit", type=int, default=100, help="sagas per page (1-1000)")
    p.add_argument("--after", metavar="CURSOR", help="the page after CURSOR (printed last)")
    p.add_argument("--json", action="store_true")

    p = command("show", c.cmd_show, "a saga's timeline, data and results")
    p.add_argument("saga_id")
    p.add_argument("--json", action="store_true")
    p.add_argument("--full", action="store_true", help="print data and results untruncated")
    p.add_argument("--diagram", metavar="PATH", help="also draw the saga's path")

    p = command("recover", c.cmd_recover, "finish every unfinished saga")
    p.add_argument("machines", nargs="*", metavar="MODULE:ATTR")

    for name, func, text in (("retry", c.cmd_retry, "re-run the failed compensation of a "
                                                     "stuck saga"),
                             ("abort", c.cmd_abort, "compensate a saga now")):
        p = command(name, func, text)
        p.add_argument("saga_id")
        p.add_argument("--reason", help="written to the saga's history")

    p = command("worker", c.cmd_worker, "claim and run sagas until SIGTERM")
    p.add_argument("machines", nargs="*", metavar="MODULE:ATTR")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--lease", type=float, default=15.0, metavar="SECONDS",
                   help="how long a dead worker's sagas stay locked before others take "
                        "them over (default 15)")
    p.add_argument("--poll", type=float, default=0.5)

    p = command("web", c.cmd_web, "serve the operations console (needs statesaga[web])")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=os.environ.get("STATESAGA_TOKEN"),
                   help="allow retry and abort with this bearer token (default "
                        "$STATESAGA_TOKEN; none: read-only)")
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; global options given after the command join those before."""
    args = build_parser().parse_args(argv)
    args.saga = [*args.saga, *getattr(args, "saga_late", [])]
    env = os.environ.get("STATESAGA_STORE")
    args.store_from_env = args.store is None and bool(env)
    if args.store is None:
        args.store = env or DEFAULT_STORE
    return args


def _configure_logs(verbose: bool) -> None:
    """The command is an application: it shows warnings, and every transition with -v."""
    import logging

    import structlog

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.INFO if verbose else logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = parse(argv)
        _configure_logs(args.verbose)
        try:
            return int(args.func(args))
        except SagaError as exc:
            message = str(exc)
            if isinstance(exc, SagaNotRegistered):
                from .cli_sagas import HOW_TO_REGISTER

                message += f"; {HOW_TO_REGISTER}"
            print(f"statesaga: {redact_urls(message)}", file=sys.stderr)
            return 2
    except BrokenPipeError:  # `statesaga list | head -1`: the reader has all it wants
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # nothing more to flush at exit
        return 0


def redact_urls(text: str) -> str:
    """`text` with the password of every URL in it replaced by `***`."""
    return _URL.sub(lambda m: redact(m.group(0)), text)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
