"""`python -m benchmarks [suite ...]`: run the suites, print and save benchmarks/RESULTS.md."""

from __future__ import annotations

import asyncio
import datetime
import importlib
import os
import sys
from pathlib import Path

from .common import machine, quiet_logs

SUITES = ["core", "shapes", "explore", "stores", "choreography", "telemetry", "web"]


def main(argv: list[str]) -> int:
    quiet_logs()
    chosen = argv or SUITES
    lines = [
        "# Benchmark results",
        "",
        f"Run {datetime.date.today().isoformat()} on {machine()}, with `make bench`.",
        "Figures are medians of several runs unless a section says one run; ratios are",
        "against a floor measured in the same run. Logging: structlog with info-level",
        "events filtered out, as in production (warnings rendered as JSON with a timestamp,",
        "to a null sink).",
        "",
    ]
    for name in chosen:
        suite = importlib.import_module(f"benchmarks.{name}")
        section = asyncio.run(suite.run())
        if argv:  # a section run on its own says when and where, under its title
            load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
            section[1:1] = ["", f"Run {datetime.date.today().isoformat()} on {machine()}, "
                                f"with `python -m benchmarks {name}` (load average {load})."]
        print("\n".join(section), flush=True)
        lines += [*section, ""]
    results = Path(__file__).with_name("RESULTS.md")
    if not argv:
        results.write_text("\n".join(lines))
    elif results.exists():  # some suites: their sections replace theirs, the rest is kept
        results.write_text(replace_sections(results.read_text(), lines))
    return 0


def replace_sections(old: str, new: list[str]) -> str:
    """`old` with each `## ` section of `new` in place of the one of the same title (or
    added at the end); the heading of `old` stays."""
    def split(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
        head: list[str] = []
        sections: dict[str, list[str]] = {}
        current = head
        for line in lines:
            if line.startswith("## "):
                current = sections.setdefault(line, [])
            current.append(line)
        return head, sections

    head, old_sections = split(old.splitlines())
    _, new_sections = split(new)
    merged = old_sections | new_sections
    return "\n".join(head + [line for section in merged.values() for line in section]) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
