"""What the console's pages show, as plain data (the HTML and the JSON API both render it)."""

from __future__ import annotations

import asyncio
import hmac
import re
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import attrs

from ..clock import Clock, SystemClock
from ..definition import SagaStateMachine
from ..orchestrator import Orchestrator
from ..orchestrator_children import family
from ..records import SagaRecord, SagaStatus, Transition
from ..stores.base import SagaStore
from ..stores.reads import UNFINISHED, SagaQuery, SagaReader, SagaSummary, reader
from .steps import step_statuses

STUCK_AND_UNFINISHED = (*UNFINISHED, SagaStatus.FAILED)
# Count labels as operators say them: a failed saga is a stuck one.
LABELS = {SagaStatus.RUNNING: "running", SagaStatus.COMPENSATING: "compensating",
          SagaStatus.FAILED: "stuck", SagaStatus.COMPLETED: "completed",
          SagaStatus.COMPENSATED: "compensated", SagaStatus.PENDING: "pending"}
_SVG_START = re.compile(r"<svg\b")
# The list's counts stop at this many per status ("100,000+"), so they cost the same at a
# million sagas as at a thousand; /metrics counts exactly.
COUNT_CAP = 100_000


@attrs.define
class Console:
    """The console's state: the store, an orchestrator for the actions, known definitions."""

    store: SagaStore
    sagas: tuple[SagaStateMachine, ...] = ()
    token: str | None = None
    bus: Any = None
    clock: Clock = attrs.field(factory=SystemClock)
    orchestrator: Orchestrator = attrs.field(init=False)
    reads: SagaReader = attrs.field(init=False)
    _svgs: OrderedDict[tuple[Any, ...], str] = attrs.field(init=False, factory=OrderedDict)

    def __attrs_post_init__(self) -> None:
        self.reads = reader(self.store)
        self.orchestrator = Orchestrator(store=self.store, sagas=self.sagas, clock=self.clock,
                                         owner=f"console:{id(self):x}")

    @property
    def read_only(self) -> bool:
        return not self.token

    def allows(self, token: str | None) -> bool:
        """Is `token` the console's token (compared in constant time)?"""
        return bool(self.token) and token is not None and hmac.compare_digest(
            token.encode(), str(self.token).encode())

    def machine(self, record: SagaRecord | SagaSummary) -> SagaStateMachine | None:
        return self.orchestrator._definitions.get((record.name, record.version))

    def registered(self) -> list[tuple[str, str]]:
        return sorted(self.orchestrator._definitions)

    async def listing(self, query: SagaQuery) -> dict[str, Any]:
        page, counts = await asyncio.gather(self.reads.query_sagas(query),
                                            self.reads.count_by_status(cap=COUNT_CAP))
        return {"sagas": [summary_json(s) for s in page.sagas], "next": page.next,
                "counts": {LABELS[s]: counts[s] for s in LABELS}, "counts_cap": COUNT_CAP}

    async def saga(self, saga_id: str) -> tuple[SagaRecord, SagaSummary]:
        record, summary = await asyncio.gather(self.store.load(saga_id),
                                               self.reads.saga_summary(saga_id))
        return record, summary

    async def family(self, record: SagaRecord) -> tuple[SagaRecord | None, list[SagaRecord]]:
        """The saga it is a sub-saga of (or None), and its own sub-sagas."""
        return await family(self.store, record)

    def saga_json(self, record: SagaRecord, summary: SagaSummary,
                  parent: SagaRecord | None = None,
                  children: Sequence[SagaRecord] = ()) -> dict[str, Any]:
        machine = self.machine(record)
        return summary_json(summary) | {
            "parent": None if parent is None else kin_json(parent),
            "children": [kin_json(c) for c in children],
            "data": dict(record.data), "results": dict(record.results),
            "history": [transition_json(t) for t in record.history],
            "steps": [attrs.asdict(s) for s in step_statuses(record, machine)],
            "registered": machine is not None,
            "stuck": record.is_stuck,
            "actions": {"retry": record.is_stuck and not self.read_only,
                        "abort": not record.is_terminal and not self.read_only},
            "read_only": self.read_only}

    async def svg(self, record: SagaRecord, children: Sequence[SagaRecord] = ()
                  ) -> str | None:
        """The saga's live diagram as inline SVG (None if its definition is not known), its
        sub-sagas drawn inside their steps; drawn once per revision (of it and of them)."""
        machine = self.machine(record)
        if machine is None:
            return None
        from ..diagrams.subsagas import drawable

        inside = drawable(machine, record, children)
        key = (record.saga_id, record.revision, *(c.revision for c in inside))
        if key not in self._svgs:
            from ..diagrams import to_svg

            svg = await asyncio.to_thread(partial(to_svg, children=inside), machine, record)
            match = _SVG_START.search(svg)
            self._svgs[key] = svg[match.start():] if match else svg
            while len(self._svgs) > 256:
                self._svgs.popitem(last=False)
        return self._svgs[key]

    async def workers(self) -> dict[str, Any]:
        now = self.clock.time()
        held = await self.reads.leased(limit=1000)
        by_owner: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for s in held:
            by_owner[s.owner or "?"].append(summary_json(s) | {"live": s.leased(now)})
        return {"now": now, "workers": [
            {"owner": owner, "sagas": sagas, "live": sum(1 for s in sagas if s["live"]),
             "lease_until": max(s["lease_until"] for s in sagas)}
            for owner, sagas in sorted(by_owner.items())]}

    async def outbox(self) -> dict[str, Any]:
        stats = await self.reads.outbox_stats()
        oldest = stats.oldest_unsent_at
        return {"unsent": stats.unsent, "oldest_unsent_at": iso(oldest),
                "oldest_age_seconds": round(stats.lag(self.clock.time()), 3)}

    def dead_letters(self) -> dict[str, Any]:
        letters = getattr(self.bus, "dead_letters", None)
        if self.bus is None or letters is None:
            return {"bus": None if self.bus is None else type(self.bus).__name__,
                    "letters": None, "queue": getattr(self.bus, "dead_queue", None)}
        return {"bus": type(self.bus).__name__, "queue": None, "letters": [
            {"type": event.type, "message_id": event.message_id,
             "correlation_id": event.correlation_id, "payload": dict(event.payload),
             "error": error} for event, error in letters]}

    async def definitions(self) -> dict[str, Any]:
        found = await self.reads.count_by_definition(STUCK_AND_UNFINISHED)
        known = set(self.orchestrator._definitions)
        return {"registered": [{"name": n, "version": v} for n, v in self.registered()],
                "definitions": [{"name": d.name, "version": d.version, "count": d.count,
                                 "registered": (d.name, d.version) in known} for d in found]}


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(UTC).isoformat()


def summary_json(s: SagaSummary) -> dict[str, Any]:
    return {"saga_id": s.saga_id, "name": s.name, "version": s.version, "state": s.state,
            "status": s.status.value, "error": s.error, "created_at": iso(s.created_at),
            "updated_at": iso(s.updated_at), "owner": s.owner, "lease_until": s.lease_until,
            "revision": s.revision, "waiting": s.waiting, "cursor": s.cursor}


def kin_json(r: SagaRecord) -> dict[str, Any]:
    """A parent or child saga, as its relative's page names it: the step it is, or runs."""
    return {"saga_id": r.saga_id, "step": r.saga_id.rpartition("/")[2], "name": r.name,
            "status": r.status.value, "state": r.state}


def transition_json(t: Transition) -> dict[str, Any]:
    return {"at": iso(t.at), "source": t.source, "dest": t.dest, "event": t.event,
            "step": t.step, "attempt": t.attempt, "error": t.error, "duration": t.duration,
            "reason": t.reason, "worker": t.worker}

