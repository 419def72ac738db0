"""One round of chaos: real worker processes run sagas while they are killed and stalled,
their database connection cut, paused and refused, one clock runs ahead, and some sagas carry
values no store can keep; then the invariants, from the store and the services' ledger.

The workers are `tests/chaos/worker.py` (`statesaga worker`, lease `Plan.lease`) running
`worker_sagas:saga` (steps a, b, c recorded in `tests/ledger.py`: effects by idempotency key,
undo tombstones, a fence per saga that refuses a lower one). This process starts the sagas
(a few a second, so that faults land while sagas are in flight), injects the faults, and
reads what came of it:

- kill: SIGKILL of a worker, replaced at once by a fresh one;
- stall: SIGSTOP of a worker for 1.5 to 2.2 leases, then SIGCONT (it wakes with a lapsed
  lease: its late calls carry a lower fence than the worker that took over, and are refused);
- PostgreSQL only, the workers' connections go through `tests/tcp_proxy.py`: drop (every
  connection reset), pause (nothing forwarded for 0.75 to 1.5 leases) or refuse (new
  connections reset for one lease);
- PostgreSQL only, worker 0's clock runs `Plan.skew` seconds ahead (on SQLite all workers
  share one machine, so one clock: see `statesaga/stores/sqlite.py`);
- hostile values: step b raises an error with a lone surrogate, a NUL, 16 MiB of text or a
  `str()` that raises, or returns a result nested 5,000 deep, with a lone surrogate or a NUL
  (`chaos.hostile`); such a saga is compensated. Data that cannot be stored (the same
  values) is refused by `start` and nothing of it is written.

Invariants: every saga terminal within `Plan.bound` seconds of the last fault, as its data
says (completed, or compensated); each effect once; nothing undone that never ran (unless
its outcome was in doubt); every compensated saga nets to zero; no effect lands after its
undo; no step tried more than `MAX_TRIES` times in a saga (a livelock).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
from ledger import Call, new_ledger, open_ledger, violations
from tcp_proxy import TcpProxy
from worker_sagas import saga as MACHINE

from chaos.hostile import HOSTILE, HOSTILE_DATA
from statesaga import InvalidSagaData, Orchestrator, SagaNotFound, SagaRecord, SagaStatus
from statesaga.stores.reads import reader
from statesaga.stores.urls import open_store

TESTS = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).with_name("worker.py")
UNFINISHED = (SagaStatus.PENDING, SagaStatus.RUNNING, SagaStatus.COMPENSATING)
MAX_TRIES = 20  # a step tried more often than this in one saga: a livelock


@attrs.frozen
class Plan:
    """How hard a round is."""

    sagas: int
    start_for: float  # seconds over which the sagas are started
    seed: int
    workers: int = 3
    lease: float = 2.0
    kill_every: float = 2.2  # seconds between kills (each one 0.5 to 1.5 times that)
    stall_every: float = 10.0
    proxy_every: float | None = 20.0  # PostgreSQL: a connection fault every so often
    skew: float = 20.0  # PostgreSQL: worker 0's clock runs this far ahead
    hostile: float = 0.03  # the share of sagas with a hostile value in step b
    tail: float = 10.0  # faults go on this long after the last start
    bound: float = 120.0  # every saga terminal within this after the last fault


@attrs.define
class Figures:
    """What a round did and found; `ok` when no invariant was broken."""

    database: str
    sagas: int = 0
    refused: int = 0  # starts refused for data that cannot be stored (none written)
    completed: int = 0
    compensated: int = 0
    failed: int = 0
    hostile: int = 0
    kills: int = 0
    stalls: int = 0
    proxy: Counter[str] = attrs.Factory(Counter)
    skewed: float = 0.0
    fenced: int = 0  # service calls refused for a lower fence (a stalled worker's)
    tombstoned: int = 0  # late actions refused by an undo's tombstone
    lost: int = 0
    double: int = 0
    late: int = 0
    livelock: int = 0
    undo_never_ran: int = 0
    problems: list[str] = attrs.Factory(list)
    settled: float = 0.0  # seconds from the last fault until every saga ended
    longest: float = 0.0  # the longest a saga took, from its start to its end
    bound: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not (self.problems or self.lost or self.double or self.late or self.livelock
                    or self.undo_never_ran)

    def __str__(self) -> str:
        faults = ", ".join(f"{n} {k}" for k, n in sorted(self.proxy.items())) or "none"
        return (f"{self.database}: {self.sagas} sagas ({self.completed} completed, "
                f"{self.compensated} compensated, {self.failed} failed; {self.hostile} with a "
                f"hostile value), {self.refused} starts refused; {self.kills} kills, "
                f"{self.stalls} stalls past the lease, proxy faults: {faults}, clock skew "
                f"{self.skewed:g} s; {self.fenced} calls fenced, {self.tombstoned} refused by "
                f"a tombstone; lost {self.lost}, double {self.double}, late {self.late}, "
                f"livelock {self.livelock}, undone never ran {self.undo_never_ran}, other "
                f"problems {len(self.problems)}; every saga ended {self.settled:.1f} s after "
                f"the last fault (bound {self.bound:g} s), the longest {self.longest:.1f} s "
                f"after its start; {self.seconds:.0f} s in all")


@attrs.define
class Fleet:
    """The worker processes, by slot: a killed one is replaced at once."""

    url: str  # what the workers connect to (the proxy, on PostgreSQL)
    ledger_url: str
    lease: float
    logs: Path
    skew: float
    procs: list[asyncio.subprocess.Process] = attrs.Factory(list)
    stalled: set[int] = attrs.Factory(set)

    async def spawn(self, slot: int) -> asyncio.subprocess.Process:
        path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
        env = {**os.environ, "PYTHONPATH": path, "STATESAGA_TEST_LEDGER": self.ledger_url,
               "CHAOS_SKEW": str(self.skew if slot == 0 else 0)}
        with (self.logs / f"worker{slot}.log").open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(WORKER), self.url, str(self.lease), env=env,
                stdout=out, stderr=asyncio.subprocess.STDOUT)
        if slot < len(self.procs):
            self.procs[slot] = proc
        else:
            self.procs.append(proc)
        return proc

    async def kill(self, slot: int) -> None:
        proc = self.procs[slot]
        proc.kill()
        await proc.wait()
        await self.spawn(slot)

    async def stall(self, slot: int, seconds: float) -> None:
        proc = self.procs[slot]
        self.stalled.add(slot)
        try:
            os.kill(proc.pid, signal.SIGSTOP)
            await asyncio.sleep(seconds)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
            self.stalled.discard(slot)

    async def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            await proc.wait()


async def run_round(url: str, plan: Plan, logs: Path) -> Figures:
    """Run one round on the store at `url` (a fresh one) and check the invariants."""
    postgres = not url.startswith("sqlite")
    figures = Figures("PostgreSQL" if postgres else "SQLite",
                      skewed=plan.skew if postgres else 0.0, bound=plan.bound)
    rng = random.Random(plan.seed)
    began = time.monotonic()
    await new_ledger(url)
    store = open_store(url)
    proxy = None
    if postgres:
        parts = urlsplit(url)
        proxy = await TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432).start()
    fleet = Fleet(proxy.dsn(url) if proxy else url, url, plan.lease, logs, figures.skewed)
    logs.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any worker
    try:
        await store.open()  # the schema, made once before the workers race to make it
        for slot in range(plan.workers):
            await fleet.spawn(slot)
        figures.refused = await _refused_starts(store)
        starting = asyncio.ensure_future(_start(store, plan, rng, figures))
        faults = asyncio.ensure_future(_faults(fleet, proxy, plan, rng, figures, starting,
                                               store))
        await starting
        await faults
        last_fault = time.monotonic()
        await _settle(store, plan.bound)
        figures.settled = time.monotonic() - last_fault
        await fleet.close()
        figures.seconds = time.monotonic() - began
        await _check(url, store, figures)
    finally:
        await fleet.close()
        if proxy is not None:
            await proxy.close()
        await store.close()
    return figures


async def _refused_starts(store: Any) -> int:
    """Start sagas whose data cannot be stored: each is refused, and nothing is written."""
    refused = 0
    orch = Orchestrator(store=store)
    for kind, data in HOSTILE_DATA.items():
        try:
            await orch.start(MACHINE, data, saga_id=f"bad-data-{kind}")
        except InvalidSagaData:
            with contextlib.suppress(SagaNotFound):
                await store.load(f"bad-data-{kind}")
                continue  # written all the same: not refused
            refused += 1
    return refused


async def _start(store: Any, plan: Plan, rng: random.Random, figures: Figures) -> None:
    orch = Orchestrator(store=store)
    pause = plan.start_for / plan.sagas
    for i in range(plan.sagas):
        data: dict[str, Any] = {"fail_at": rng.choice([None, None, "b", "c"]),
                                "delay": round(rng.uniform(0.05, 0.4), 3)}
        if rng.random() < plan.hostile:
            data = {"hostile": rng.choice(HOSTILE), "delay": data["delay"]}
            figures.hostile += 1
        await orch.start(MACHINE, data, saga_id=f"s{i:05d}")
        figures.sagas += 1
        await asyncio.sleep(pause)


async def _faults(fleet: Fleet, proxy: TcpProxy | None, plan: Plan, rng: random.Random,
                  figures: Figures, starting: asyncio.Future[None], store: Any) -> None:
    """Kill, stall and cut off workers until the last start and `plan.tail` after it (or
    every saga ended)."""
    now = time.monotonic()
    next_kill = now + plan.kill_every * rng.uniform(0.5, 1.5)
    next_stall = now + plan.stall_every * rng.uniform(0.3, 1.0)
    next_proxy = now + (plan.proxy_every or 0) * rng.uniform(0.5, 1.0)
    stalls: set[asyncio.Task[None]] = set()
    end = None
    while end is None or time.monotonic() < end:
        await asyncio.sleep(0.05)
        now = time.monotonic()
        if starting.done() and end is None:
            end = now + plan.tail
        free = [s for s in range(plan.workers) if s not in fleet.stalled]
        if now >= next_kill and free:
            await fleet.kill(rng.choice(free))
            figures.kills += 1
            next_kill = now + plan.kill_every * rng.uniform(0.5, 1.5)
        if now >= next_stall and len(free) > 1:
            task = asyncio.ensure_future(fleet.stall(rng.choice(free),
                                                     plan.lease * rng.uniform(1.5, 2.2)))
            stalls.add(task)
            task.add_done_callback(stalls.discard)
            figures.stalls += 1
            next_stall = now + plan.stall_every * rng.uniform(0.5, 1.5)
        if proxy is not None and plan.proxy_every and now >= next_proxy:
            fault = rng.choice(["drop", "pause", "refuse"])
            figures.proxy[fault] += 1
            if fault == "drop":
                proxy.drop()
            elif fault == "pause":
                proxy.pause()
                await asyncio.sleep(plan.lease * rng.uniform(0.75, 1.5))
                proxy.resume()
            else:
                proxy.refuse()
                await asyncio.sleep(plan.lease)
                proxy.refuse(False)
            next_proxy = time.monotonic() + plan.proxy_every * rng.uniform(0.5, 1.5)
        if end is not None and not await _unfinished(store):
            break
    await asyncio.gather(*stalls)


async def _unfinished(store: Any) -> int:
    counts = await reader(store).count_by_status()
    return sum(counts[s] for s in UNFINISHED)


async def _settle(store: Any, bound: float) -> None:
    """Wait (at most `bound` seconds) for every saga to end."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline and await _unfinished(store):  # noqa: ASYNC110 - other processes
        await asyncio.sleep(0.5)


async def _check(url: str, store: Any, figures: Figures) -> None:
    records = [await store.load(s.saga_id) for s in await store.list()]
    ledger = open_ledger(url)
    try:
        effects, calls = await ledger.read()
    finally:
        await ledger.close()
    found = figures_of(records, effects, calls)
    for name in ("completed", "compensated", "failed", "lost", "double", "late", "livelock",
                 "undo_never_ran", "fenced", "tombstoned", "longest"):
        setattr(figures, name, found[name])
    figures.problems = found["problems"]
    if figures.refused != len(HOSTILE_DATA):
        figures.problems.append(f"{len(HOSTILE_DATA) - figures.refused} starts with data that "
                                "cannot be stored were not refused, or left something written")


def figures_of(records: Sequence[SagaRecord], effects: Sequence[tuple[Any, ...]],
               calls: Sequence[Call]) -> dict[str, Any]:
    """The counts the invariants are read from (`problems`: what `ledger.violations` found
    that no count names)."""
    problems = violations(records, effects, calls, MACHINE)
    status = Counter(r.status for r in records)

    def matching(pattern: str) -> list[str]:
        return [p for p in problems if re.search(pattern, p)]

    double = matching(r"exists \d+ times|undone \d+ times, not once|ran \d+ times, but")
    never_ran = matching(r"compensated, but it never ran")
    remain = matching(r"compensated, but the effects of")
    late = 0
    undone: set[tuple[str, str]] = set()
    for c in calls:  # in the order the services saw them
        if c.kind == "undo" and c.outcome != "fenced":
            undone.add((c.saga_id, c.step))
        elif c.outcome == "done" and (c.saga_id, c.step) in undone:
            late += 1
    tries = Counter((c.saga_id, c.step) for c in calls if c.kind == "do")
    # a livelock: a step tried over and over, or a saga not ended within the bound
    livelock = len({saga_id for (saga_id, _), n in tries.items() if n > MAX_TRIES}
                   | {r.saga_id for r in records if r.status in UNFINISHED})
    named = set(double) | set(never_ran) | set(remain)
    lost = sum(status[s] for s in UNFINISHED)
    return {
        "completed": status[SagaStatus.COMPLETED], "compensated": status[SagaStatus.COMPENSATED],
        "failed": status[SagaStatus.FAILED], "lost": lost, "double": len(double),
        "late": late + len(remain), "livelock": livelock, "undo_never_ran": len(never_ran),
        "fenced": sum(c.outcome == "fenced" for c in calls),
        "longest": max(((r.updated_at - r.created_at).total_seconds() for r in records
                        if r.status not in UNFINISHED), default=0.0),
        "tombstoned": sum(c.outcome == "refused" for c in calls),
        "problems": [p for p in problems if p not in named
                     and not re.search(r"expected \w+, ended (pending|running|compensating)",
                                       p)],
    }
