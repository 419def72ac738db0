"""Many worker processes on one PostgreSQL: a worker SIGKILLed mid-way loses no saga, the
others take its sagas over once its lease expires, and each transition says who wrote it.

The workers are the `statesaga worker` command, with a short lease, running
`worker_sagas:saga`, whose steps record their effects in a ledger in the same schema
(`tests/ledger.py`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from ledger import new_ledger, open_ledger, violations
from worker_sagas import saga as machine

from statesaga import Orchestrator, SagaRecord
from statesaga.stores.postgres import PostgresStore
from statesaga.stores.urls import open_store

TESTS = Path(__file__).parent
WORKERS, SAGAS, LEASE = 4, 400, 3.0  # lease: renewed every 1 s, so a busy worker keeps it
TERMINAL = "status IN ('completed', 'compensated', 'failed')"


@pytest.fixture
def pg_url(postgres_dsn: str, pg_schema: str) -> str:
    return f"{postgres_dsn}?schema={pg_schema}"


@pytest.fixture(params=["postgres", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sagas.db'}?durability=normal"
    return str(request.getfixturevalue("pg_url"))


def child_env(url: str) -> dict[str, str]:
    """A child imports the tests' modules (tests/) and statesaga from this checkout."""
    path = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "STATESAGA_TEST_LEDGER": url}


async def worker(url: str, log: Path, *, machine: str = "worker_sagas:saga",
                 lease: float = LEASE) -> asyncio.subprocess.Process:
    with log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the worker
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "statesaga.cli", "--store", url, "worker",
            machine, "--poll", "0.05", "--concurrency", "8", "--lease", str(lease),
            env=child_env(url),
            stdout=out, stderr=asyncio.subprocess.STDOUT)


async def wait_until(store: PostgresStore, sql: str, *args: Any, timeout: float = 60) -> None:
    """Poll until `sql` (one boolean) is true; fail after `timeout` seconds."""
    async def poll() -> None:
        while True:
            async with store._connection() as conn:
                if await conn.fetchval(store._d(sql), *args):
                    return
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def read_logs(where: Path) -> str:
    return "\n".join(f.read_text() for f in sorted(where.glob("worker*.log")))


def segments(workers: list[str | None]) -> list[str | None]:
    """The writers of a history in turn: A A B B -> [A, B]."""
    return [w for i, w in enumerate(workers) if i == 0 or w != workers[i - 1]]


def history_problems(record: SagaRecord, seqs: list[int], revision: int, killed: str
                     ) -> list[str]:
    """What is wrong with who wrote a saga's history, and the revisions it took."""
    out = []
    where = record.saga_id
    workers = [t.worker for t in record.history]
    if seqs[-1] != revision:
        out.append(f"{where}: its last transition has revision {seqs[-1]}, the saga {revision}")
    gaps = [b - a for a, b in itertools.pairwise(seqs)]
    for (prev, t), gap in zip(itertools.pairwise(record.history), gaps, strict=True):
        if t.worker == prev.worker and gap != 1:
            out.append(f"{where}: revisions {gap - 1} apart without a new worker")
        if t.worker != prev.worker and gap not in (2, 3):  # one claim (two: the dead worker's)
            out.append(f"{where}: a new worker after {gap - 1} revisions (claims)")
        if t.worker != prev.worker and prev.worker is not None:
            if prev.worker != killed:
                out.append(f"{where}: taken from {prev.worker}, which did not die")
            if t.event != "retry_unknown":
                out.append(f"{where}: taken over with {t.event!r}, not 'retry_unknown'")
    turns = segments(workers)
    if len(turns) != len(set(turns)):
        out.append(f"{where}: its writers take turns: {turns}")
    if workers[0] is not None:
        out.append(f"{where}: started pending, but its start says {workers[0]}")
    return out


async def test_a_worker_killed_mid_way_leaves_no_saga_unfinished(
        pg_url: str, tmp_path: Path) -> None:
    await new_ledger(pg_url)
    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    starter = Orchestrator(store=store)
    for i in range(SAGAS):
        await starter.start(machine, {"fail_at": "c" if i % 5 == 0 else None, "delay": 0.05},
                            saga_id=f"s{i:03}")
    procs = [await worker(pg_url, tmp_path / f"worker{n}.log") for n in range(WORKERS)]
    victim, *others = procs
    try:
        # mid-way: a quarter done, and the victim holds sagas it has written to
        await wait_until(store, f"SELECT count(*) >= $1 FROM {{s}}sagas WHERE {TERMINAL}",
                         SAGAS // 4)
        await wait_until(store, "SELECT count(*) >= 3 FROM {s}sagas AS s WHERE owner LIKE $1 "
                         f"AND NOT {TERMINAL} AND EXISTS (SELECT 1 FROM {{s}}transitions AS t "
                         "WHERE t.saga_id = s.saga_id AND t.worker = s.owner)",
                         f"%:{victim.pid}:%")
        victim.kill()
        await victim.wait()
        await wait_until(store, f"SELECT count(*) = $1 FROM {{s}}sagas WHERE {TERMINAL}", SAGAS)
        for proc in others:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = [await asyncio.wait_for(proc.wait(), 30) for proc in others]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        print(read_logs(tmp_path))  # pytest shows it if the test fails

    assert [-signal.SIGKILL, 0, 0, 0] == [victim.returncode, *codes]
    records = await store.list()
    async with store._connection() as conn:
        rows = await conn.fetch(store._d("SELECT saga_id, seq FROM {s}transitions "
                                         "ORDER BY saga_id, seq"))
        revisions = dict(await conn.fetch(store._d("SELECT saga_id, revision FROM {s}sagas")))
    await store.close()
    seqs: dict[str, list[int]] = {}
    for saga_id, seq in rows:
        seqs.setdefault(saga_id, []).append(seq)
    (killed,) = {t.worker for r in records for t in r.history
                 if t.worker and t.worker.split(":")[1] == str(victim.pid)}
    ledger = open_ledger(pg_url)
    effects, calls = await ledger.read()
    await ledger.close()

    assert SAGAS == len(records)
    assert [] == violations(records, effects, calls)
    assert [] == [p for r in records for p in history_problems(
        r, seqs[r.saga_id], revisions[r.saga_id], killed)]
    taken_over = [r.saga_id for r in records if killed in segments(
        [t.worker for t in r.history])[:-1]]
    assert taken_over  # the victim died holding sagas it had written to
    assert WORKERS == len({t.worker for r in records for t in r.history} - {None})


async def test_one_saga_id_run_by_two_processes_at_once_runs_its_steps_once(
        store_url: str) -> None:
    url = store_url
    await new_ledger(url)
    sagas = [(f"twice-{i}", {"fail_at": "c" if i % 3 == 0 else None, "delay": 0.05})
             for i in range(10)]
    # Both racers live: a lease long enough that no stall of a loaded machine expires it.
    # (An expired lease lets the other take the saga over and run its current step again,
    # with the same idempotency key: at least once, by design, as the crash tests check.
    # With the 0.5 s default, two full-suite runs in about a dozen failed so; with 0.15 s it
    # happens at the first step.)
    racer_env = {**child_env(url), "CRASH_LEASE": "30"}
    racers = [await asyncio.create_subprocess_exec(
        sys.executable, str(TESTS / "crash_child.py"), url, "race",
        json.dumps(sagas[::step]), env=racer_env, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE) for step in (1, -1)]
    for proc in racers:
        assert proc.stdout is not None
        assert b"ready\n" == await asyncio.wait_for(proc.stdout.readline(), 30)
    for proc in racers:
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
    outs = [await asyncio.wait_for(proc.communicate(), 60) for proc in racers]
    assert [0, 0] == [proc.returncode for proc in racers], [err for _, err in outs]
    outcomes = [json.loads(out) for out, _ in outs]
    store, ledger = open_store(url), open_ledger(url)
    records = {r.saga_id: r for r in await store.list()}
    effects, calls = await ledger.read()
    await store.close()
    await ledger.close()

    expected = {saga_id: "compensated" if data["fail_at"] else "completed"
                for saga_id, data in sagas}
    assert expected == {saga_id: r.status.value for saga_id, r in records.items()}
    for saga_id, status in expected.items():  # the other racer waited, or was told it runs
        assert {status} <= {o[saga_id] for o in outcomes} <= {status, "conflict"}
    assert Counter({(saga_id, step, "do"): 1 for saga_id, data in sagas
                    for step in ("a", "b", "c")}) == Counter(
        (c.saga_id, c.step, c.kind) for c in calls if c.kind == "do")
    assert [] == violations(list(records.values()), effects, calls)
