"""`explore_failures`: run every failure scenario of a saga and check the saga invariants."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..definition import SagaStateMachine
from ..exceptions import SagaNotFound, UndeliverableEvent
from ..graph import FORWARD, UNKNOWN
from ..orchestrator import Orchestrator
from ..records import SagaRecord
from ..stores.base import Commit, SagaStore, Signals
from .clock import FakeClock
from .report import FailureReport, ScenarioResult
from .scenarios import (
    Injector,
    Journal,
    Scenario,
    SimulatedCrash,
    crash_plan,
    event_paths,
    plan,
)

IN_DOUBT = ("retry_unknown", "timeout", "abort")


def _simulated(where: str) -> None:
    raise SimulatedCrash(where)


class CrashingStore:
    """Passes everything to `store`, but "dies" at its n-th write, before or after it.

    `crash(where)` is how it dies: by default a `SimulatedCrash`; a test of real processes
    passes one that SIGKILLs the process.
    """

    def __init__(self, store: SagaStore, crash_at: int | None, after: bool,
                 crash: Callable[[str], None] = _simulated) -> None:
        self._store, self._at, self._after, self.writes = store, crash_at, after, 0
        self._crash = crash
        self.url = store.url

    async def _write(self, apply: Callable[[], Awaitable[Any]]) -> Any:
        self.writes += 1
        if self.writes == self._at and not self._after:
            self._crash(f"crash before write {self.writes}")
        result = await apply()
        if self.writes == self._at:
            self._crash(f"crash after write {self.writes}")
        return result

    async def create(self, record: SagaRecord, **kw: Any) -> None:
        await self._write(lambda: self._store.create(record, **kw))

    async def commit(self, commit: Commit) -> Signals:
        result: Signals = await self._write(lambda: self._store.commit(commit))
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _Explorer:
    def __init__(self, machine: SagaStateMachine, data: Any,
                 store: SagaStore, setup: Callable[[], Any] | None,
                 snapshot: Callable[[], Any] | None) -> None:
        self.machine, self.store = machine, store
        self.data = dict(data) if isinstance(data, Mapping) else data  # or typed data
        self.setup, self.snapshot = setup, snapshot
        self.injector = Injector(machine)
        self.clock = FakeClock()
        self.count = 0
        self.happy: str | None = None
        self.happy_events: list[str] = []
        graph = machine.graph
        self.allowed = {(t.source, t.event, t.dest) for t in graph.transitions}

    def _picture(self, saga_id: str) -> str | None:
        if self.snapshot is None:
            return None
        text = json.dumps(self.snapshot(), sort_keys=True, default=str)
        return text.replace(saga_id, "<saga_id>")

    async def run(self, scenario: Scenario, reopen: Callable[[], SagaStore]
                  ) -> tuple[ScenarioResult, int]:
        if scenario.skipped is not None:
            return ScenarioResult(scenario.name, "skipped", scenario.expect, None,
                                  reason=scenario.skipped), 0
        if self.setup is not None:
            self.setup()
        self.count += 1
        saga_id = f"explore-{self.count}"
        before = self._picture(saga_id)
        self.injector.begin(scenario)
        store = CrashingStore(self.store, scenario.crash_at, scenario.crash_after)
        orch = Orchestrator(store=store, clock=self.clock, lease=5)
        events = list(scenario.events or self.happy_events)
        record: SagaRecord | None
        sent = 0
        try:
            record = await orch.run(self.injector.copy, self.data, saga_id=saga_id)
            for event in events:
                await self._inject(orch, saga_id, event)
                sent += 1
            record = await orch.get(saga_id)
        except SimulatedCrash:
            self.clock.advance(6)  # the dead process's lease runs out
            fresh = reopen()
            again = Orchestrator(store=fresh, clock=self.clock, lease=5,
                                 sagas=[self.injector.copy])
            await again.recover()
            try:
                for event in events[sent:]:  # the bus delivers again what was not acked
                    await self._inject(again, saga_id, event)
                record = await fresh.load(saga_id)
            except (SagaNotFound, UndeliverableEvent):
                record = None
            if fresh is not self.store:
                await fresh.close()
        after = self._picture(saga_id)
        violations = self.check(scenario, record, self.injector.journal, before, after)
        if scenario.name == "happy path" and not violations:
            self.happy = after
        final = None if record is None else record.state
        return ScenarioResult(scenario.name, "violated" if violations else "ok",
                              scenario.expect, final, tuple(violations), saga_id), store.writes

    async def _inject(self, orch: Orchestrator, saga_id: str, event: str) -> None:
        """An event as it reaches the saga: sent, or its timer running out, or a person's abort."""
        if event == "timeout":
            record = await orch.get(saga_id)
            d = self.machine.graph.defs.get(record.state)
            timeout = d.step.timeout if d is not None else None
            self.clock.advance((timeout or self.machine.deadline or 0) + 1)
            await orch.recover()  # a worker finds the timer due
        elif event == "abort":
            await orch.abort(saga_id, reason="aborted by the explorer")
        else:
            await orch.send(saga_id, event)

    def check(self, scenario: Scenario, record: SagaRecord | None, journal: Journal,
              before: str | None, after: str | None) -> list[str]:
        if record is None:  # it crashed before its first write: it must have left no trace
            out = [] if not journal.ran else [f"steps ran but the saga was never stored: "
                                              f"{journal.ran}"]
            return out + ([] if before == after else ["the outside world changed, but "
                                                      "the saga was never stored"])
        out = []
        if record.state != scenario.expect:
            out.append(f"expected to end {scenario.expect}, ended in {record.state}"
                       + (f" ({record.error})" if record.error else ""))
        out += self._history(record)
        out += self._compensations(record, journal)
        if record.state == "compensated" and before != after:
            out.append("after compensation the outside world differs from before the saga: "
                       + _diff(before, after))
        if record.state == "completed" and self.happy is not None and after != self.happy:
            out.append("completed, but the outside world differs from the clean happy path "
                       "(a step not idempotent under its key?): " + _diff(self.happy, after))
        return out

    def _history(self, record: SagaRecord) -> list[str]:
        out = []
        for prev, t in zip(record.history, record.history[1:], strict=False):
            if t.source != prev.dest:
                out.append(f"history jumps from {prev.dest} to {t.source}")
            if (t.source, t.event, t.dest) not in self.allowed and t.source != t.dest:
                out.append(f"history has {t.source} -> {t.dest} on {t.event!r}, which is not "
                           "a transition of the machine")
        return out

    def _compensations(self, record: SagaRecord, journal: Journal) -> list[str]:
        graph = self.machine.graph
        in_doubt = {t.step for t in record.history if t.event in IN_DOUBT}
        waited = set()  # states that waited for an event and got a reply that moved on
        for t in record.history:
            kind = t.kind
            if kind == UNKNOWN and t.source is not None:
                in_doubt.add(t.source)
            elif kind == FORWARD and t.source is not None and t.source in graph.defs \
                    and graph.defs[t.source].step.action is None:
                waited.add(t.source)
        path: list[str] = []
        for t in record.history:
            if t.dest in graph.defs and t.dest not in path:
                path.append(t.dest)
        ran = set(journal.ran) | waited
        may_exist = [s for s in path if graph.compensable(s) and (s in ran or s in in_doubt)]
        undone = list(dict.fromkeys(journal.undone))
        out = [f"compensated {s}, which never ran and was never in doubt"
               for s in undone if s not in ran and s not in in_doubt]
        if record.state == "completed":
            expected: list[str] = []
        elif record.state == "failed":
            stuck = next(t.step for t in reversed(record.history) if t.dest == "failed")
            expected = list(reversed(may_exist))
            expected = expected[: expected.index(stuck)] if stuck in expected else expected
        else:
            expected = list(reversed(may_exist))
        if undone != expected:
            out.append(f"compensations ran as {undone}, expected {expected} (the completed "
                       "compensable steps, newest first)")
        return out


def _diff(expected: str | None, actual: str | None) -> str:
    a, b = json.loads(expected or "null"), json.loads(actual or "null")
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        return "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys)[:400]
    return f"{a!r} -> {b!r}"[:400]


async def explore_failures(
    machine: SagaStateMachine,
    data: Any = None,
    *,
    store: SagaStore | None = None,
    crashes: bool = True,
    setup: Callable[[], Any] | None = None,
    snapshot: Callable[[], Any] | None = None,
    bound: int = 6,
) -> FailureReport:
    """Run every failure scenario of `machine` and check the saga invariants after each.

    Each step raising (once, always), timing out, the deadline passing in it; each
    compensation raising (once, always); with `crashes`, a crash before and after every
    store write, then recovery by a fresh orchestrator. `setup()` resets the outside world
    before each scenario; `snapshot()` returns a JSON-comparable picture of it. `bound`
    limits the event paths tried on explicit graphs. No `store`: a temporary SQLite file.
    """
    if bound < 1:
        raise ValueError(f"bound must be >= 1 (the longest event path to try), not {bound!r}")
    machine.validate()
    started = time.perf_counter()
    tmp = None
    if store is None:
        from ..stores.sqlite import SQLiteStore

        tmp = tempfile.TemporaryDirectory(prefix="statesaga-explore-")
        store = SQLiteStore(Path(tmp.name) / "explore.db", durability="normal")
    reopen = store.reopen  # an InMemoryStore reopens on the same memory
    notes = []
    graph = machine.graph
    if not any(graph.compensable(s) for s in graph.forward):
        notes.append(f"nothing to compensate: no state of {machine.name!r} has a "
                     "compensation, so no failure can be undone")
    explorer = _Explorer(machine, data, store, setup, snapshot)
    results: list[ScenarioResult] = []
    explorer.happy_events, by_events = event_paths(machine, bound)
    try:
        happy, writes = await explorer.run(Scenario("happy path", "completed"), reopen)
        results.append(happy)
        scenarios: Sequence[Scenario] = [*plan(machine), *by_events]
        if crashes:
            scenarios = [*scenarios, *await _crash_scenarios(explorer, writes, reopen)]
        for scenario in scenarios:
            results.append((await explorer.run(scenario, reopen))[0])
    finally:
        await store.close()
        if tmp is not None:
            tmp.cleanup()
    return FailureReport(machine.name, tuple(results), tuple(notes),
                         time.perf_counter() - started)


async def _crash_scenarios(explorer: _Explorer, happy_writes: int,
                           reopen: Callable[[], SagaStore]) -> list[Scenario]:
    graph = explorer.machine.graph
    steps = [s for s in graph.forward if graph.defs[s].step.action is not None]
    out = crash_plan(happy_writes, failing=None)
    if steps and any(graph.compensable(s) for s in steps):
        probe = Scenario("probe", "compensated", raise_in=steps[-1])
        _, writes = await explorer.run(probe, reopen)
        out += crash_plan(writes, failing=steps[-1])
    return out
