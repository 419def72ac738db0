"""How long a full failure exploration takes: the 4-step trip saga, crashes included."""

from __future__ import annotations

import time

from statesaga.examples.trip import build_trip, trip_services
from statesaga.testing import explore_failures

TARGET = 5.0  # seconds, for the whole exploration


async def run() -> list[str]:
    services = trip_services()
    trip = build_trip(services)
    times, counts = [], []
    for _ in range(3):
        start = time.perf_counter()
        report = await explore_failures(trip, {"flight": "LH1"}, setup=services.reset,
                                        snapshot=services.snapshot)
        times.append(time.perf_counter() - start)
        counts.append((len(report), len(report.skipped), len(report.violations)))
    seconds = sorted(times)[1]
    total, skipped, violations = counts[0]
    return [
        "## Failure exploration (`explore_failures`, the 4-step trip saga)",
        "",
        "| scenarios | of them crashes | skipped | violations | seconds (median of 3) | "
        "target |",
        "|---:|---:|---:|---:|---:|---|",
        f"| {total} | {sum(1 for r in report.results if r.name.startswith('crash'))} | "
        f"{skipped} | {violations} | {seconds:.2f} | < {TARGET:g} s: "
        f"{'met' if seconds < TARGET else 'NOT met'} |",
        "",
        "Each scenario runs the saga on a temporary SQLite file (durability normal) with a "
        "virtual clock; a crash scenario reopens the store and recovers in a fresh "
        "orchestrator. The skipped ones are the deadline scenarios: the trip has no deadline.",
    ]
