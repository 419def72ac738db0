"""The `statesaga` command: demo, render, list, show, recover, retry, abort, worker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from statesaga import Orchestrator, SagaStatus, SQLiteStore
from statesaga.cli import main
from statesaga.examples.trip import trip

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sagas.db'}"


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_demo_prints_the_timeline_of_a_completed_trip(
        capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    code, out, _ = run_cli(capsys, "--store", store_url, "demo")
    assert 0 == code
    assert "status: COMPLETED in completed" in out
    assert re.search(r"book_flight +→ book_hotel +succeed", out)
    assert "calls: flights.reserve, hotels.book, payments.charge, notifications.send" in out


def test_demo_with_a_failing_step_marks_the_compensations(
        capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    code, out, _ = run_cli(capsys, "--store", store_url, "demo", "--fail-at", "charge_payment")
    assert 0 == code
    assert "✗" in out
    assert "↩" in out
    assert "status: COMPENSATED in compensated" in out
    assert "hotels.cancel, flights.cancel" in out


def test_a_stuck_saga_is_listed_shown_and_retried(
        capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    code, out, _ = run_cli(capsys, "--store", store_url, "demo", "--fail-at",
                           "charge_payment", "--stuck", "book_hotel")
    assert 3 == code
    assert "status: FAILED in failed" in out
    code, out, _ = run_cli(capsys, "--store", store_url, "list", "--status", "failed",
                           "--json")
    rows = json.loads(out)
    assert ["failed"] == [r["status"] for r in rows]
    saga_id = rows[0]["saga_id"]
    code, out, _ = run_cli(capsys, "--store", store_url, "show", saga_id)
    assert f"`statesaga retry {saga_id}`" in out
    code, out, _ = run_cli(capsys, "--store", store_url, "retry", saga_id, "--reason",
                           "hotel API fixed")
    assert 0 == code
    assert "status: COMPENSATED in compensated" in out
    assert "hotel API fixed" in out


def test_list_prints_a_table(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    run_cli(capsys, "--store", store_url, "demo")
    code, out, _ = run_cli(capsys, "--store", store_url, "list", "--name", "trip")
    assert 0 == code
    assert out.splitlines()[0].split() == ["saga_id", "name", "status", "state", "updated_at"]
    assert "(1 saga)" in out


def test_show_as_json_and_with_a_diagram(capsys: pytest.CaptureFixture[str], store_url: str,
                                         tmp_path: Path) -> None:
    run_cli(capsys, "--store", store_url, "demo", "--fail-at", "book_hotel")
    saga_id = json.loads(run_cli(capsys, "--store", store_url, "list", "--json")[1])[0][
        "saga_id"]
    _code, out, _ = run_cli(capsys, "--store", store_url, "show", saga_id, "--json",
                           "--diagram", str(tmp_path / "saga.dot"))
    doc = json.loads(out[: out.rindex("}") + 1])
    assert ("compensated", "book_flight") == (doc["state"], doc["history"][0]["dest"])
    assert "digraph" in (tmp_path / "saga.dot").read_text()


def test_render_draws_a_definition(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "trip.dot"
    code, out, _ = run_cli(capsys, "render", "statesaga.examples.trip:trip", "-o", str(target))
    assert (0, str(target)) == (code, out.strip())
    assert "compensating_book_hotel" in target.read_text()


def test_recover_finishes_pending_sagas(capsys: pytest.CaptureFixture[str], store_url: str,
                                        tmp_path: Path) -> None:
    async def start() -> None:
        store = SQLiteStore(tmp_path / "sagas.db")
        for i in range(3):
            await Orchestrator(store=store).start(trip, {"flight": "LH1"}, saga_id=f"r{i}")
        await store.close()

    asyncio.run(start())
    code, out, _ = run_cli(capsys, "--store", store_url, "recover")
    assert 0 == code
    assert "recovered 3 saga(s)" in out
    assert "completed: 3" in out


def test_abort_compensates_a_pending_saga(capsys: pytest.CaptureFixture[str], store_url: str,
                                          tmp_path: Path) -> None:
    async def start() -> None:
        store = SQLiteStore(tmp_path / "sagas.db")
        await Orchestrator(store=store).start(trip, saga_id="stop-me")
        await store.close()

    asyncio.run(start())
    code, out, _ = run_cli(capsys, "--store", store_url, "abort", "stop-me", "--reason",
                           "customer called")
    assert 0 == code
    assert "status: COMPENSATED" in out
    assert "customer called" in out


def test_errors_say_what_was_wrong(capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    run_cli(capsys, "--store", store_url, "demo")
    code, _, err = run_cli(capsys, "--store", store_url, "show", "ghost")
    assert 2 == code
    assert "no saga 'ghost'" in err
    code, _, err = run_cli(capsys, "render", "no_colon_here")
    assert (2, True) == (code, "is not MODULE:ATTR" in err)
    code, _, err = run_cli(capsys, "render", "statesaga.examples.trip:STEPS")
    assert "is not a SagaStateMachine" in err
    code, _, err = run_cli(capsys, "render", "no.such.module:x")
    assert "cannot import 'no.such.module'" in err
    code, _, err = run_cli(capsys, "--store", "mysql://x", "list")
    assert 2 == code
    assert "mysql" in err


def test_a_worker_runs_started_sagas_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "sagas.db"

    async def start() -> None:
        store = SQLiteStore(db)
        for i in range(5):
            await Orchestrator(store=store).start(trip, saga_id=f"w{i}")
        await store.close()

    async def done() -> int:
        store = SQLiteStore(db)
        try:
            return len(await store.list(status=SagaStatus.COMPLETED))
        finally:
            await store.close()

    asyncio.run(start())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "statesaga.cli", "--store", f"sqlite:///{db}", "worker",
         "--poll", "0.05"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            if asyncio.run(done()) == 5:
                break
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert (0, 5) == (worker.returncode, asyncio.run(done()))
    assert "worker stopped after driving 5 saga(s)" in err


@pytest.mark.parametrize(("fail_at", "state"), [(None, "completed"), ("hotel", "compensated")])
def test_demo_runs_the_trip_as_a_choreography(capsys: pytest.CaptureFixture[str],
                                              store_url: str, fail_at: str | None,
                                              state: str) -> None:
    args = ["--store", store_url, "demo", "--choreography"]
    code, out, _ = run_cli(capsys, *args, *(["--fail-at", fail_at] if fail_at else []))
    assert 0 == code
    assert f"status: {state.upper()} in {state}" in out
    assert re.search(r"booking_flight +→ booking_hotel +FlightBooked", out)


def test_demo_choreography_refuses_a_step_it_does_not_have(
        capsys: pytest.CaptureFixture[str], store_url: str) -> None:
    code, _, err = run_cli(capsys, "--store", store_url, "demo", "--choreography",
                           "--fail-at", "charge_payment")
    assert 2 == code
    assert "one of flight, hotel, payment" in err


def test_demo_over_rabbitmq_completes_and_leaves_nothing_on_the_broker(
        capsys: pytest.CaptureFixture[str], store_url: str, rabbitmq_url: str) -> None:
    import aio_pika

    code, out, _ = run_cli(capsys, "--store", store_url, "demo", "--choreography", "--bus",
                           rabbitmq_url)
    assert (0, True) == (code, "status: COMPLETED in completed" in out)

    async def exchange_exists() -> bool:
        connection = await aio_pika.connect(rabbitmq_url)
        try:
            channel = await connection.channel()
            await channel.get_exchange("statesaga-demo", ensure=True)
            return True
        except aio_pika.exceptions.ChannelClosed:
            return False
        finally:
            await connection.close()

    assert asyncio.run(exchange_exists()) is False
