"""Sagas that are not a straight line: a parallel group's wall time and per-branch cost, and
a sub-saga step's cost against a plain step's, each against a floor measured here."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from statesaga import InMemoryStore, Orchestrator, SagaStateMachine, SagaStore, SQLiteStore

from .common import best_of

SLEEP = 0.010  # each branch waits this long, as a remote call would
WALL_TARGET = 0.012  # three such branches at once: at most this much wall time per saga
SLOW_SAGAS = 50  # sagas per measurement with sleeping branches
FAST_SAGAS = 2000  # sagas per measurement with no-op steps
BRANCH_BUDGET = 5.0  # µs: the core's per-step overhead target (benchmarks/core.py)


async def noop(ctx: Any) -> None:
    return None


async def wait(ctx: Any) -> None:
    await asyncio.sleep(SLEEP)


def group(branches: int, action: Callable[[Any], Awaitable[None]]) -> SagaStateMachine:
    """A saga that is one parallel group of `branches` steps, each running `action`."""
    m = SagaStateMachine(f"group_{branches}_{action.__name__}")
    with m.parallel("book"):
        for i in range(branches):
            m.step(f"b{i}", action, compensation=noop)
    return m.validate()


def line(steps: int, child: SagaStateMachine | None = None) -> SagaStateMachine:
    """`steps` no-op steps; with `child`, one more in the middle that runs it as a sub-saga."""
    m = SagaStateMachine(f"line_{steps}_{'sub' if child else 'plain'}")
    for i in range(steps):
        m.step(f"s{i}", noop, compensation=noop)
        if child is not None and i == steps // 2 - 1:
            m.step("pay", child, data=lambda ctx: {})
    return m.validate()


async def floor_gather(branches: int, sagas: int, seconds: float) -> float:
    """The least three calls at once can take: `asyncio.gather` of them, per run."""
    async def one() -> None:
        if seconds:
            await asyncio.sleep(seconds)

    start = time.perf_counter()
    for _ in range(sagas):
        await asyncio.gather(*(one() for _ in range(branches)))
    return (time.perf_counter() - start) / sagas


async def per_saga(machine: SagaStateMachine, sagas: int,
                   store: Callable[[], SagaStore] = InMemoryStore) -> float:
    """Wall time per saga, run one after another to its end."""
    s = store()
    orch = Orchestrator(store=s, lease=3600)
    await orch.run(machine)  # registered, warmed up
    start = time.perf_counter()
    for _ in range(sagas):
        await orch.run(machine)
    elapsed = (time.perf_counter() - start) / sagas
    await s.close()
    return elapsed


async def writes_per_saga(machine: SagaStateMachine, store: Callable[[], SagaStore]) -> float:
    """The store's writing calls (create, commit, claim, renew, release) per saga run."""
    s = store()
    calls = 0

    def counted(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await method(*args, **kwargs)
        return call

    for name in ("create", "commit", "claim", "renew", "release"):
        setattr(s, name, counted(getattr(s, name)))
    orch = Orchestrator(store=s, lease=3600)
    for _ in range(10):
        await orch.run(machine)
    await s.close()
    return calls / 10


def sqlite_store() -> SagaStore:
    folder = tempfile.mkdtemp(prefix="statesaga-bench-")
    return SQLiteStore(Path(folder) / "shapes.db", durability="normal")


async def run() -> list[str]:
    us, ms = 1e6, 1e3
    floor_wall = await best_of(5, lambda: floor_gather(3, SLOW_SAGAS, SLEEP))
    wall = await best_of(5, lambda: per_saga(group(3, wait), SLOW_SAGAS))
    wall_sqlite = await best_of(3, lambda: per_saga(group(3, wait), SLOW_SAGAS,
                                                     sqlite_store))
    # a branch's marginal cost: a group of 3 no-op branches against a group of 1
    g1 = await best_of(5, lambda: per_saga(group(1, noop), FAST_SAGAS))
    g3 = await best_of(5, lambda: per_saga(group(3, noop), FAST_SAGAS))
    f1 = await best_of(5, lambda: floor_gather(1, FAST_SAGAS * 10, 0))
    f3 = await best_of(5, lambda: floor_gather(3, FAST_SAGAS * 10, 0))
    branch, floor_branch = (g3 - g1) / 2, (f3 - f1) / 2
    # a step's marginal cost: 3 no-op steps against 2; a sub-saga step's: 2 no-op steps
    # with a sub-saga step (its child: one no-op step) between them, against the 2 alone
    child = SagaStateMachine("child")
    child.step("c0", noop, compensation=noop)
    rows, steps = [], []
    for label, store in (("in memory", InMemoryStore), ("SQLite WAL, synchronous=NORMAL",
                                                        sqlite_store)):
        sagas = FAST_SAGAS if store is InMemoryStore else FAST_SAGAS // 4
        runs = 5 if store is InMemoryStore else 3
        two = await best_of(runs, lambda: per_saga(line(2), sagas, store))  # noqa: B023
        three = await best_of(runs, lambda: per_saga(line(3), sagas, store))  # noqa: B023
        sub = await best_of(runs, lambda: per_saga(line(2, child), sagas, store))  # noqa: B023
        base = await writes_per_saga(line(2), store)
        plain_writes = await writes_per_saga(line(3), store) - base
        sub_writes = await writes_per_saga(line(2, child), store) - base
        step, sub_step = three - two, sub - two
        steps.append(step)
        rows.append(f"| {label} | {step * us:,.1f} | {sub_step * us:,.1f} | "
                    f"{sub_step / step:.1f} | {(sub_step - step) * us:,.1f} | "
                    f"{plain_writes:g} | {sub_writes:g} |")
    return [
        "## Parallel groups and sub-sagas",
        "",
        f"A saga that is one parallel group of 3 branches, each `await asyncio.sleep("
        f"{SLEEP:g})` (a remote call), run {SLOW_SAGAS} times one after another; floor: "
        f"`asyncio.gather` of three {SLEEP * ms:g} ms sleeps, run as often, in the same run.",
        "",
        "| what | ms per saga | ratio to floor | target |",
        "|---|---:|---:|---|",
        f"| floor: `asyncio.gather` of 3 sleeps | {floor_wall * ms:.2f} | 1.00 | |",
        f"| statesaga, 3 branches at once, in memory | {wall * ms:.2f} | "
        f"{wall / floor_wall:.2f} | ≤ {WALL_TARGET * ms:g} ms: "
        f"{'met' if wall <= WALL_TARGET else '**NOT met**'} |",
        f"| statesaga, 3 branches at once, SQLite WAL, synchronous=NORMAL | "
        f"{wall_sqlite * ms:.2f} | {wall_sqlite / floor_wall:.2f} | ≤ {WALL_TARGET * ms:g} "
        f"ms: {'met' if wall_sqlite <= WALL_TARGET else '**NOT met**'} |",
        "",
        f"A branch's own cost, in memory: a group of 3 no-op branches against a group of 1 "
        f"({FAST_SAGAS} sagas per measurement), halved; the floor's is `gather` of 3 no-op "
        "coroutines against 1, halved.",
        "",
        "| what | µs per branch | target |",
        "|---|---:|---|",
        f"| floor: one more coroutine in `asyncio.gather` | {floor_branch * us:.2f} | |",
        f"| statesaga: one more branch in a group | {branch * us:.2f} | |",
        f"| statesaga: one more step in a line, for comparison (below) | {steps[0] * us:.2f} "
        "| |",
        f"| overhead per branch | {(branch - floor_branch) * us:.2f} | within the core's "
        f"per-step budget (≤ {BRANCH_BUDGET:g} µs): "
        f"{'met' if (branch - floor_branch) * us <= BRANCH_BUDGET else '**NOT met**'} |",
        "",
        "A sub-saga step against a plain step, sagas run one after another: a plain step's "
        "cost is a saga of 3 no-op steps against one of 2; a sub-saga step's, 2 no-op steps "
        "with a sub-saga step between them (its child: one no-op step, with a compensation) "
        "against the 2 alone. A sub-saga is a saga of its own: its record is created, "
        "claimed, its step committed, its lease released, and the parent's step committed "
        "as any step's; the store writes (create, commit, claim, renew, release calls) "
        "say so:",
        "",
        "| store | plain step, µs | sub-saga step, µs | ratio | extra, µs | store writes: "
        "plain step | sub-saga step |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
