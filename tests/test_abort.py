"""An abort from another process reaches a saga a worker is running, within its lease."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from test_workers import child_env, wait_until, worker
from worker_sagas import slow

from statesaga import Orchestrator, SagaStatus
from statesaga.stores.postgres import PostgresStore


async def test_an_abort_from_another_shell_cancels_the_long_step_and_compensates_at_once(
        tmp_path: Path, postgres_dsn: str, pg_schema: str) -> None:
    url = f"{postgres_dsn}?schema={pg_schema}"
    store = PostgresStore(postgres_dsn, schema=pg_schema)
    await Orchestrator(store=store).start(slow, {"hold": 60}, saga_id="long-1")
    proc = await worker(url, tmp_path / "worker.log", machine="worker_sagas:slow", lease=1.5)
    try:
        await wait_until(store, "SELECT state = 'hold' FROM {s}sagas WHERE saga_id = $1",
                         "long-1")
        shell = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "statesaga.cli", "abort", "long-1", "--store", url,
            "--reason", "customer called", "--saga", "worker_sagas:slow", env=child_env(url),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(shell.communicate(), 60)
        assert 0 == shell.returncode, out.decode()
        # the worker sees the request at its next renewal (every 0.5 s), not after 60 s
        await wait_until(store, "SELECT status = 'compensated' FROM {s}sagas "
                                "WHERE saga_id = $1", "long-1", timeout=20)
    finally:
        proc.terminate()
        await proc.wait()
    record = await store.load("long-1")
    await store.close()
    assert SagaStatus.COMPENSATED is record.status
    assert [("hold", "compensating_hold", "abort"), ("compensating_hold", "compensating_first",
                                                       "succeed"),
            ("compensating_first", "compensated", "succeed")] == [
        (t.source, t.dest, t.event) for t in record.history[-3:]]
    assert "customer called" in (record.error or "")


async def test_an_abort_of_a_saga_that_ended_says_so_and_exits_non_zero(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sagas.db'}"
    from statesaga import SQLiteStore

    store = SQLiteStore(tmp_path / "sagas.db")
    await Orchestrator(store=store).run(slow, {"hold": 0}, saga_id="done-1")
    await store.close()
    shell = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "statesaga.cli", "abort", "done-1", "--store", url, "--reason",
        "too late", "--saga", "worker_sagas:slow", env=child_env(url),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(shell.communicate(), 60)
    assert 0 != shell.returncode
    assert "already completed" in out.decode()
