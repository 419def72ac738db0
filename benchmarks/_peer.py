"""The peer: the same saga on DBOS Transact, in its own virtualenv (benchmarks/.dbos-venv)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._db import DSN, FLIGHT, HERE, RUN_SECONDS, RUNS, pg_version, schema

if TYPE_CHECKING:
    from .stores import Compared

DBOS_VENV = HERE / ".dbos-venv"


async def _exec(*cmd: str | Path, timeout: float) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=HERE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, "", f"timed out after {timeout:.0f} s"
    return proc.returncode or 0, out.decode(), err.decode()


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1][:200]


async def dbos_python() -> tuple[Path | None, str]:
    """benchmarks/.dbos-venv's python with dbos installed (made if missing), or why not."""
    python = DBOS_VENV / "bin" / "python"
    if not python.exists():
        rc, _, err = await _exec(sys.executable, "-m", "venv", DBOS_VENV, timeout=120)
        if rc:
            return None, f"python -m venv failed: {_last_line(err)}"
    rc, _, _ = await _exec(python, "-c", "import dbos", timeout=60)
    if rc:
        rc, _, err = await _exec(python, "-m", "pip", "install", "-q", "dbos", timeout=300)
        if rc:
            shutil.rmtree(DBOS_VENV, ignore_errors=True)
            return None, f"pip install dbos failed: {_last_line(err)}"
    return python, ""


async def dbos_lines(directory: str, ours: dict[str, Compared]) -> list[str]:
    python, why = await dbos_python()
    if python is None:
        return [f"DBOS: not measured ({why})."]
    runs: list[tuple[str, str, dict[str, Any] | str]] = []
    async with schema("dbos") as name:
        for label, url, key in (
                (f"{await pg_version()} (psycopg 3, its own schema)", DSN, "postgres"),
                ("SQLite (its default: rollback journal, synchronous=FULL)",
                 f"sqlite:///{os.path.join(directory, 'dbos.sqlite')}", "full")):
            rc, out, err = await _exec(python, HERE / "_dbos_peer.py", url, name,
                                       str(RUN_SECONDS), str(FLIGHT), str(RUNS), timeout=240)
            runs.append((label, key, json.loads(_last_line(out)) if rc == 0 else
                         f"failed: {_last_line(err)}"))
    lines = [
        "| database | sequential: DBOS | statesaga | floor | "
        f"{FLIGHT} in flight: DBOS | statesaga | floor |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    version, sizes = "", []
    for label, key, got in runs:
        if isinstance(got, str):
            lines.append(f"| {label} | {got} | | | | | |")
            continue
        version, r = got["dbos"], ours[key]
        sizes.append(f"{got['n']:,}")
        lines.append(f"| {label} | {got['sequential']:,.0f} | {r['saga 1']:,.0f} | "
                     f"{r['floor 1']:,.0f} | {got['in_flight']:,.0f} | {r['saga n']:,.0f} | "
                     f"{r['floor n']:,.0f} |")
    if version:
        lines += ["", f"Sagas per second. DBOS {version}: one `@DBOS.workflow` calling four "
                  "no-op `@DBOS.step`s (a no-op compensation step each, in an `except`), in its "
                  f"own virtualenv (benchmarks/.dbos-venv); {' and '.join(sizes)} sagas per "
                  f"run, median of {RUNS}. statesaga and floor: from the first table (beside "
                  "DBOS on SQLite: synchronous=FULL, as DBOS's default). The issue saw DBOS at "
                  "about 100 sagas/s on either database and the PostgreSQL floor at about 900."]
    return lines
