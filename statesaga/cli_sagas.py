"""Where the `statesaga` command finds saga definitions, and the command line that reaches a saga.

Definitions come from `--saga MODULE:ATTR`, `$STATESAGA_SAGAS` (comma-separated), the
`statesaga.sagas` entry points of installed packages, and the built-in examples. A module
is imported from the current directory too, as `python -m` would (no `PYTHONPATH=.`).
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points

import attrs

from .definition import SagaStateMachine
from .exceptions import SagaError
from .stores.urls import redact

ENTRY_POINTS = "statesaga.sagas"
EXAMPLES = ("statesaga.examples.trip:trip", "statesaga.examples.payment:payment")
HOW_TO_REGISTER = (
    "register its definition: pass --saga MODULE:ATTR (repeatable, e.g. --saga "
    "myapp.sagas:trip), list it in $STATESAGA_SAGAS (comma-separated), or declare it as an "
    f"entry point of your package in the group {ENTRY_POINTS!r}")


def load_machine(ref: str) -> SagaStateMachine:
    """`package.module:attr` -> the SagaStateMachine it names (modules in the current
    directory are found too)."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise SagaError(f"{ref!r} is not MODULE:ATTR (e.g. statesaga.examples.trip:trip)")
    try:
        module = _import(module_name)
    except ImportError as exc:
        raise SagaError(f"cannot import {module_name!r} for {ref!r}: {exc} (the current "
                        f"directory {os.getcwd()} was searched too)") from exc
    machine = getattr(module, attr, None)
    if not isinstance(machine, SagaStateMachine):
        raise SagaError(f"{ref!r} is not a SagaStateMachine (got {type(machine).__name__})")
    return machine


def _import(name: str) -> object:
    try:
        return importlib.import_module(name)
    except ImportError:
        here = os.getcwd()
        if here in sys.path or "" in sys.path:
            raise
        sys.path.insert(0, here)
        return importlib.import_module(name)


@attrs.frozen
class Found:
    """A definition and where it came from ("--saga", "env", "entry point", "example")."""

    machine: SagaStateMachine
    ref: str
    source: str


def find_sagas(given: Sequence[str] = (), env: str | None = None) -> list[Found]:
    """Every definition the command knows: `given` (--saga), $STATESAGA_SAGAS, entry points,
    then the examples."""
    env = os.environ.get("STATESAGA_SAGAS", "") if env is None else env
    refs = [(ref, "--saga") for ref in given]
    refs += [(ref.strip(), "env") for ref in env.split(",") if ref.strip()]
    found = [Found(load_machine(ref), ref, source) for ref, source in refs]
    for point in entry_points(group=ENTRY_POINTS):
        try:
            machine = point.load()
        except Exception as exc:
            raise SagaError(f"the entry point {point.name!r} ({point.value}) in the group "
                            f"{ENTRY_POINTS!r} cannot be loaded: {exc}") from exc
        if not isinstance(machine, SagaStateMachine):
            raise SagaError(f"the entry point {point.name!r} ({point.value}) in the group "
                            f"{ENTRY_POINTS!r} is not a SagaStateMachine")
        found.append(Found(machine, point.value, "entry point"))
    found += [Found(load_machine(ref), ref, "example") for ref in EXAMPLES]
    return found


def command_line(store: str, store_from_env: bool, found: Iterable[Found], name: str,
                 version: str, *words: str) -> str:
    """The `statesaga` command that works as written, for a saga of `name` `version`: the
    store (unless $STATESAGA_STORE names it; never its password) and the --saga it needs."""
    parts = ["statesaga"]
    if not store_from_env:
        safe = redact(store)
        parts += ["--store", shlex.quote(safe) if safe == store else "\"$STATESAGA_STORE\""]
    for f in found:
        if (f.machine.name, f.machine.version) == (name, version):
            if f.source == "--saga":
                parts += ["--saga", shlex.quote(f.ref)]
            break
    else:
        parts += ["--saga", "MODULE:ATTR"]
    return " ".join([*parts, *(shlex.quote(w) for w in words)])
