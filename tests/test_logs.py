"""statesaga.logs: quiet with nothing configured, structured when the application asks.

The set-ups that depend on a process's logging state run in fresh interpreters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import structlog

from statesaga import Orchestrator, SagaRecord, SagaStateMachine, SagaStatus, StepContext
from statesaga.logs import NAME, logger

SAGAS = """
import asyncio, json, logging, sys
from statesaga import Orchestrator, Retry, SagaStateMachine

def declined(ctx):
    raise RuntimeError("card declined")

def refund_down(ctx):
    raise RuntimeError("refund service down")

trip = SagaStateMachine("trip")
trip.step("book", lambda ctx: {"booked": 1}, compensation=lambda ctx: None)
trip.step("pay", declined)
stuck = SagaStateMachine("stuck")
stuck.step("debit", lambda ctx: 1, compensation=refund_down,
           compensation_retry=Retry(attempts=2, backoff=0))
stuck.step("pay", declined)

def run(*sagas):
    async def main():
        orch = Orchestrator()
        return [await orch.run(m, {"card": "4111"}, saga_id=f"{m.name}-1") for m in sagas]
    return asyncio.run(main())
"""


def child(code: str) -> subprocess.CompletedProcess[str]:
    """Run `code` after SAGAS in a fresh interpreter; its exit code, stdout and stderr."""
    source = SAGAS + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True,
                          timeout=120, check=False)
    assert 0 == done.returncode, done.stderr
    return done


def machine(fail: bool = True) -> SagaStateMachine:
    def declined(ctx: StepContext) -> None:
        raise RuntimeError("card declined")

    m = SagaStateMachine("shop")
    m.step("reserve", lambda ctx: {"n": 1}, compensation=lambda ctx: None)
    m.step("pay", declined if fail else (lambda ctx: None))
    return m


def asyncio_run(m: SagaStateMachine) -> SagaRecord:
    return asyncio.run(Orchestrator().run(m, {"card": "4111"}, saga_id="shop-1"))


@pytest.fixture
def stdlib() -> Iterator[list[logging.LogRecord]]:
    """Nothing configured in structlog; the records of the stdlib logger `statesaga`."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    std = logging.getLogger(NAME)
    std.addHandler(handler)
    structlog.reset_defaults()  # the suite's autouse fixture configures it again per test
    try:
        yield records
    finally:
        std.removeHandler(handler)
        std.setLevel(logging.NOTSET)


# -- nothing configured: quiet --------------------------------------------------------------


def test_a_compensated_saga_prints_nothing_when_nothing_is_configured() -> None:
    done = child("""
        [record] = run(trip)
        assert record.status.value == "compensated", record
    """)
    assert ("", "") == (done.stdout, done.stderr)


def test_a_stuck_saga_writes_one_line_to_stderr_when_nothing_is_configured() -> None:
    done = child("""
        [record] = run(stuck)
        assert record.status.value == "failed", record
    """)
    assert "" == done.stdout
    [line] = done.stderr.splitlines()
    assert line.startswith("saga.stuck saga_id='stuck-1' saga='stuck' step='debit'")
    assert "RuntimeError: refund service down" in line
    assert "statesaga retry stuck-1" in line


def test_a_store_that_cannot_be_reached_is_said_on_stderr_without_a_traceback() -> None:
    done = child("""
        from statesaga import open_store

        async def work():
            orch = Orchestrator(store=open_store("postgresql://postgres@127.0.0.1:1/test"))
            stop = asyncio.Event()
            asyncio.get_running_loop().call_later(0.2, stop.set)
            await orch.work(poll=0.05, stop=stop)

        asyncio.run(work())
    """)
    lines = done.stderr.splitlines()
    assert ("", True) == (done.stdout, bool(lines))
    for line in lines:
        assert line.startswith("saga.claim_failed error=\"StoreError: cannot connect to the "
                               "saga store postgresql://postgres@127.0.0.1:1/test"), line


# -- stdlib logging ---------------------------------------------------------------------------


def test_stdlib_logging_at_info_sees_every_transition_with_its_key_values() -> None:
    done = child("""
        logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                            format="%(levelname)s %(name)s %(message)s")
        run(trip)
    """)
    lines = done.stdout.splitlines()
    transitions = [line for line in lines if " saga.transition " in line]
    assert [
        "INFO statesaga saga.transition saga_id='trip-1' saga='trip' source='book' dest='pay' "
        "trigger='succeed' step='book' attempt=1 duration_ms=",
        "INFO statesaga saga.transition saga_id='trip-1' saga='trip' source='pay' "
        "dest='compensating_book' trigger='fail' step='pay' attempt=1 duration_ms=",
        "INFO statesaga saga.transition saga_id='trip-1' saga='trip' source='compensating_book' "
        "dest='compensated' trigger='succeed' step='book' attempt=1 duration_ms=",
    ] == [line[: line.index("duration_ms=") + 12] for line in transitions]
    assert not any("4111" in line for line in lines)  # the data is never logged
    assert "" == done.stderr


def test_stdlib_records_carry_the_event_and_its_fields_as_attributes() -> None:
    done = child("""
        class Collect(logging.Handler):
            def emit(self, record):
                if record.event == "saga.transition":
                    print(json.dumps([record.event, record.saga_id, record.source,
                                      record.dest, record.attempt, record.module]))

        logging.getLogger("statesaga").addHandler(Collect())
        logging.getLogger("statesaga").setLevel(logging.INFO)
        run(trip)
    """)
    first = json.loads(done.stdout.splitlines()[0])
    assert ["saga.transition", "trip-1", "book", "pay", 1] == first[:5]
    assert "logs" != first[5]  # the record names the module that logged, not the logger's


def test_a_failed_step_is_logged_without_a_traceback_unless_debug(
        stdlib: list[logging.LogRecord]) -> None:
    logging.getLogger(NAME).setLevel(logging.INFO)
    asyncio_run(machine())
    [failed] = [r for r in stdlib if getattr(r, "event", "") == "saga.attempt_failed"]
    assert (None, "RuntimeError: card declined") == (failed.exc_info, failed.error)

    stdlib.clear()
    logging.getLogger(NAME).setLevel(logging.DEBUG)
    asyncio_run(machine())
    [failed] = [r for r in stdlib if getattr(r, "event", "") == "saga.attempt_failed"]
    assert failed.exc_info is not None
    assert "card declined" == str(failed.exc_info[1])


def test_nothing_reaches_the_stdlib_logger_below_its_level(
        stdlib: list[logging.LogRecord]) -> None:
    asyncio_run(machine())  # the logger's level: the root's WARNING
    assert [] == stdlib


def test_an_error_keeps_its_traceback(stdlib: list[logging.LogRecord]) -> None:
    try:
        raise ValueError("broken")
    except ValueError:
        logger.exception("saga.worker_error", saga_id="w-1")
    [record] = stdlib
    assert (logging.ERROR, "saga.worker_error saga_id='w-1'") == (record.levelno,
                                                                  record.getMessage())
    assert record.exc_info is not None


def test_fields_named_like_log_record_attributes_stay_in_the_message(
        stdlib: list[logging.LogRecord]) -> None:
    logging.getLogger(NAME).setLevel(logging.INFO)
    ctx = StepContext("s-1", "pay", {}, {}, name="shop")
    ctx.log.info("paid %s euros", 3, name="alice", msg="thanks")
    [record] = stdlib
    assert ("paid 3 euros saga_id='s-1' saga='shop' step='pay' name='alice' msg='thanks'"
            == record.getMessage())
    assert ("s-1", "pay", NAME) == (record.saga_id, record.step, record.name)


# -- structlog configured by the application --------------------------------------------------


def test_capture_logs_captures_the_transitions_with_nothing_else_configured() -> None:
    structlog.reset_defaults()
    with structlog.testing.capture_logs() as logs:
        record = asyncio_run(machine())
    assert SagaStatus.COMPENSATED is record.status
    assert [("reserve", "pay"), ("pay", "compensating_reserve"),
            ("compensating_reserve", "compensated")] == [
        (e["source"], e["dest"]) for e in logs if e["event"] == "saga.transition"]
    assert {"saga_id", "saga", "trigger", "step", "attempt", "duration_ms"} <= set(logs[0])


def test_structlog_at_info_gets_a_failed_step_as_its_error_not_its_traceback() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    with structlog.testing.capture_logs() as logs:
        asyncio_run(machine())
    failed = next(e for e in logs if e["event"] == "saga.attempt_failed")
    assert ("RuntimeError: card declined", False) == (failed["error"], "exc_info" in failed)


def test_structlog_at_warning_gets_no_transition() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    with structlog.testing.capture_logs() as logs:
        asyncio_run(machine(fail=False))
    assert [] == logs


def test_structlog_configured_by_the_application_prints_through_its_processors() -> None:
    done = child("""
        import structlog

        structlog.configure(processors=[structlog.processors.JSONRenderer()],
                            logger_factory=structlog.PrintLoggerFactory(sys.stdout))
        run(trip)
    """)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert ["trip-1"] * 3 == [e["saga_id"] for e in events if e["event"] == "saga.transition"]
    assert "" == done.stderr


def test_a_bound_logger_keeps_its_fields_and_binds_more() -> None:
    bound = logger.bind(saga_id="s").bind(step="a")
    assert "<SagaLogger {'saga_id': 's', 'step': 'a'}>" == repr(bound)
