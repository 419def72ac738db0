"""`/metrics`: the store's numbers as Prometheus text (and the same through OpenTelemetry)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .. import telemetry
from ..records import SagaStatus
from .console import LABELS, STUCK_AND_UNFINISHED, Console


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")


def _metric(name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]
            ) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        inner = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{inner}}} {value:g}" if inner else f"{name} {value:g}")
    return lines


async def prometheus_text(console: Console) -> str:
    """The store's gauges in Prometheus' text format (version 0.0.4)."""
    reads = console.reads
    counts, by_definition, held, outbox = await asyncio.gather(
        reads.count_by_status(), reads.count_by_definition(STUCK_AND_UNFINISHED),
        reads.leased(now=console.clock.time(), limit=100_000), reads.outbox_stats())
    lag = outbox.lag(console.clock.time())
    known = set(console.orchestrator._definitions)
    telemetry.observe_store(counts={s.value: n for s, n in counts.items()},
                            outbox_unsent=outbox.unsent, outbox_lag=lag)
    lines = _metric("statesaga_sagas", "Sagas in the store by status (failed: stuck).",
                    [({"status": s.value}, counts[s]) for s in LABELS])
    lines += _metric("statesaga_sagas_stuck", "Sagas whose compensation gave up: a person "
                     "must fix the cause, then retry them.", [({}, counts[SagaStatus.FAILED])])
    lines += _metric("statesaga_sagas_open", "Unfinished and stuck sagas by definition.",
                     [({"saga": d.name, "version": d.version,
                        "registered": str((d.name, d.version) in known).lower()}, d.count)
                      for d in by_definition])
    lines += _metric("statesaga_leases_live", "Sagas held under a live worker lease.",
                     [({}, len(held))])
    lines += _metric("statesaga_outbox_unsent", "Outbox messages not sent yet.",
                     [({}, outbox.unsent)])
    lines += _metric("statesaga_outbox_lag_seconds", "Age of the oldest unsent outbox "
                     "message (0: none waits).", [({}, round(lag, 3))])
    return "\n".join(lines) + "\n"

