"""`python -m benchmarks [suite ...]`: run the suites, print and save benchmarks/RESULTS.md."""

from __future__ import annotations

import asyncio
import datetime
import importlib
import sys
from pathlib import Path

from .common import machine, quiet_logs

SUITES = ["core", "explore", "stores", "choreography"]


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
        print("\n".join(section), flush=True)
        lines += [*section, ""]
    if not argv:
        Path(__file__).with_name("RESULTS.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
