"""The toolkit's own cost, in memory: per step, per saga start, per definition, per saga kept."""

from __future__ import annotations

import sys
import time
import tracemalloc
from typing import Any

from statesaga import InMemoryStore, Orchestrator, SagaStateMachine, kernel

from .common import best_of

STEPS = 4
SAGAS = 2000


async def noop(ctx: Any) -> None:
    return None


async def boom(ctx: Any) -> None:
    raise RuntimeError("step 3 fails")


def definition(fail_at_3: bool = False) -> SagaStateMachine:
    m = SagaStateMachine("bench_fail" if fail_at_3 else "bench")
    for i in range(STEPS):
        m.step(f"s{i}", boom if fail_at_3 and i == 2 else noop, compensation=noop)
    return m.validate()


async def floor_per_step() -> float:
    """A plain async loop calling the same four functions: the least any toolkit can cost."""
    funcs = [noop] * STEPS
    start = time.perf_counter()
    for _ in range(SAGAS):
        for f in funcs:
            await f(None)
    return (time.perf_counter() - start) / (SAGAS * STEPS)


async def saga_per_step(machine: SagaStateMachine, calls_per_saga: int) -> float:
    orch = Orchestrator(store=InMemoryStore(), lease=3600)
    start = time.perf_counter()
    for _ in range(SAGAS):
        await orch.run(machine)
    return (time.perf_counter() - start) / (SAGAS * calls_per_saga)


async def start_one() -> float:
    orch = Orchestrator(store=InMemoryStore(), lease=3600)
    m = definition()
    await orch.start(m)
    start = time.perf_counter()
    for _ in range(SAGAS):
        await orch.start(m)
    return (time.perf_counter() - start) / SAGAS


async def build_definition() -> float:
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        definition()  # built and validated: the graph compiled, the mirror added
    return (time.perf_counter() - start) / n


async def kernel_decision() -> float:
    """The kernel alone: one decision per transition of the 4-step happy path."""
    graph = definition().graph
    steps = [(kernel.Position(s), kernel.candidates(graph, s, "succeed")[0])
             for s in graph.forward]
    n = SAGAS * 10
    decide = kernel.decide
    start = time.perf_counter()
    for _ in range(n):
        for pos, edge in steps:
            decide(graph, pos, "succeed", edge)
    return (time.perf_counter() - start) / (n * len(steps))


def _deep_size(obj: Any, seen: set[int] | None = None) -> int:
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, type):
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set | frozenset):
        size += sum(_deep_size(x, seen) for x in obj)
    else:
        for slot in getattr(type(obj), "__slots__", ()):
            if hasattr(obj, slot):
                size += _deep_size(getattr(obj, slot), seen)
        if hasattr(obj, "__dict__"):
            size += _deep_size(obj.__dict__, seen)
    return size


async def memory_per_saga() -> tuple[float, float]:
    """(KiB retained per finished saga, KiB of that beyond its data and history)."""
    store = InMemoryStore()
    orch = Orchestrator(store=store, lease=3600)
    m = definition()
    n = 2000
    await orch.run(m, {"order": 1})
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        await orch.run(m, {"order": i})
    retained = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    first, row = list(store._rows.values())[-2:]
    shared: set[int] = set()  # what every saga's history points to (states, kinds, UTC)
    _deep_size(first.history, shared) + _deep_size(first.data_json, shared)
    payload = _deep_size(row.history, shared) + _deep_size(row.data_json, shared)
    return retained / 1024, (retained - payload) / 1024


async def run() -> list[str]:
    ok, failing = definition(), definition(fail_at_3=True)
    floor = await best_of(5, floor_per_step)
    happy = await best_of(5, lambda: saga_per_step(ok, STEPS))
    # with step 3 failing: 3 actions and 2 compensations run per saga
    fail = await best_of(5, lambda: saga_per_step(failing, 5))
    start = await best_of(5, start_one)
    build = await best_of(3, build_definition)
    decision = await best_of(5, kernel_decision)
    kept, beyond = await memory_per_saga()
    us = 1e6
    return [
        "## Core, in memory (4-step saga, no-op steps)",
        "",
        "| what | µs | ratio to floor | target |",
        "|---|---:|---:|---|",
        f"| floor: plain async loop, per step | {floor * us:.2f} | 1.0 | |",
        f"| statesaga happy path, per step | {happy * us:.2f} | {happy / floor:.0f} | "
        f"overhead ≤ 5 µs: {'met' if (happy - floor) * us <= 5 else 'NOT met'} "
        f"({(happy - floor) * us:.1f}) |",
        f"| statesaga, step 3 failing, per call (3 actions + 2 compensations) | "
        f"{fail * us:.2f} | {fail / floor:.0f} | overhead ≤ 5 µs: "
        f"{'met' if (fail - floor) * us <= 5 else 'NOT met'} ({(fail - floor) * us:.1f}) |",
        f"| start one more instance (`Orchestrator.start`) | {start * us:.2f} | "
        f"{start / floor:.0f} | ≤ 5 µs: {'met' if start * us <= 5 else 'NOT met'} |",
        f"| the kernel's decision alone, per transition | {decision * us:.2f} | "
        f"{decision / floor:.0f} | ≤ 1 µs: {'met' if decision * us <= 1 else 'NOT met'} |",
        f"| build a definition (4 steps, validated, machine built) | {build * us:.0f} | "
        f"{build / floor:.0f} | once per saga type |",
        "",
        f"Memory retained per finished in-memory saga: {kept:.2f} KiB, of which "
        f"{beyond:.2f} KiB beyond its data and history (target ≤ 4 KiB: "
        f"{'met' if beyond <= 4 else 'NOT met'}).",
        "",
        "The 5 µs and 1 µs targets are missed, and why (measured 2026-12-02, not in this "
        "run): instructions per step, counted with callgrind as the difference between 200 "
        "and 1,200 sagas, rose from about 142k before the kernel split (15.9 µs then) to "
        "232k; a tuning pass (commits built as plain attrs classes, the in-memory store's "
        "empty answer shared, log fields built only for a log that shows them, no spans "
        "without a provider) brought it to 202k (34.7 to 30.8 µs); 204k once the fault "
        "work merged (its clock reads the database's offset), 30.8 to 34.4 µs in this "
        "session's runs as the machine's load varied. A step now builds its "
        "context, the kernel's Move and Position, the "
        "Transition, and a Commit carrying the lease, fence, outbox and queued-event fields "
        "the fault work added; the store answers with Signals (an abort asked from "
        "elsewhere, events queued for the saga) that the runner reads. cProfile shows no "
        "function above about 9% of a step, so there is no hot spot left to remove: 5 µs "
        "would take a different runtime (no per-step records kept in memory, decisions "
        "batched), not a tuning pass.",
    ]
