"""What telemetry costs per step: without OpenTelemetry, with its API alone, with the SDK.

Each figure comes from a child process, so that "not installed" really has no
`opentelemetry` module (it is blocked before statesaga is imported).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = 3
MODES = {
    "not installed": "import sys; sys.modules['opentelemetry'] = None",
    "API only (no SDK: OpenTelemetry's no-op provider)": "",
    "SDK, spans and metrics recorded (no exporter)": (
        "from opentelemetry import trace, metrics\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "from opentelemetry.sdk.metrics.export import InMemoryMetricReader\n"
        "trace.set_tracer_provider(TracerProvider())\n"
        "metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))"),
}
CHILD = """
{setup}
import asyncio
from benchmarks.common import best_of, quiet_logs
from benchmarks.core import STEPS, definition, saga_per_step
quiet_logs()
machine = definition()
print(asyncio.run(best_of(7, lambda: saga_per_step(machine, STEPS))) * 1e6)
"""


def _per_step(setup: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD.format(setup=setup)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def _noop_call_ns() -> float:
    """One attempt's telemetry calls on the no-op path (OpenTelemetry absent), in ns."""
    code = ("import sys; sys.modules['opentelemetry'] = None\n"
            "from statesaga import telemetry\n"
            "import timeit\n"
            "def one():\n"
            "    with telemetry.attempt_span(False, 'saga', 'id', 'step', 1) as span:\n"
            "        span.outcome('ok')\n"
            "n = 200000\n"
            "print(min(timeit.repeat(one, number=n, repeat=5)) / n * 1e9)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return float(out.strip())


async def run() -> list[str]:
    runs: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(ROUNDS):  # modes alternate, so that a busy spell hits them all alike
        for mode, setup in MODES.items():
            runs[mode].append(_per_step(setup))
    figures = {mode: statistics.median(found) for mode, found in runs.items()}
    base = figures["not installed"]
    noop = _noop_call_ns()
    lines = [
        "## Telemetry's cost (4-step saga in memory, no-op steps)",
        "",
        "µs per step of `Orchestrator(store=InMemoryStore()).run(machine)`: in a child "
        f"process per figure, the median of 7 runs of 2,000 sagas; {ROUNDS} rounds with the "
        "modes alternating, the median of the rounds.",
        "",
        "| OpenTelemetry | µs per step | vs not installed |",
        "|---|---:|---:|",
    ]
    lines += [f"| {mode} | {us:.2f} | {us / base:.2f} |" for mode, us in figures.items()]
    lines += ["", f"Not installed, an attempt's telemetry (enter and leave its span, set the "
              f"outcome) is {noop:.0f} ns: {noop / (base * 1000) * 100:.1f}% of a step."]
    return lines

