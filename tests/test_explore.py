"""explore_failures: it passes correct sagas and catches each kind of broken one."""

from __future__ import annotations

from typing import Any

import pytest

from statesaga import InMemoryStore, SagaStateMachine, StepContext
from statesaga.examples.payment import build_payment, payment_services
from statesaga.examples.trip import build_trip, trip_services
from statesaga.testing import explore_failures


class Bank:
    """A small outside world: an account balance, stock, and bookings by key."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.balance = 100
        self.stock = 10
        self.bookings: dict[str, str] = {}
        self.refunded: set[str] = set()
        self.fences: dict[str, int] = {}

    def admit(self, ctx: StepContext) -> None:
        """As a service must: refuse a fence lower than one seen for the saga, and a key
        whose effect was undone (a late call from a worker that stalled past its lease)."""
        if ctx.fence < self.fences.get(ctx.saga_id, 0) or ctx.idempotency_key in self.refunded:
            raise RuntimeError(f"refused: fence {ctx.fence} or key undone")
        self.fences[ctx.saga_id] = ctx.fence

    def snapshot(self) -> dict[str, Any]:
        return {"balance": self.balance, "stock": self.stock, "bookings": dict(self.bookings)}


def correct_saga(bank: Bank) -> SagaStateMachine:
    m = SagaStateMachine("shop")

    async def charge(ctx: StepContext) -> None:
        bank.admit(ctx)
        if ctx.idempotency_key not in bank.bookings:
            bank.bookings[ctx.idempotency_key] = "charged"
            bank.balance -= 30

    async def refund(ctx: StepContext) -> None:
        bank.refunded.add(ctx.idempotency_key)  # a tombstone: a late charge is refused
        if bank.bookings.pop(ctx.idempotency_key, None) is not None:
            bank.balance += 30

    async def reserve(ctx: StepContext) -> None:
        bank.admit(ctx)
        if ctx.idempotency_key not in bank.bookings:
            bank.bookings[ctx.idempotency_key] = "reserved"
            bank.stock -= 1

    async def release(ctx: StepContext) -> None:
        bank.refunded.add(ctx.idempotency_key)
        if bank.bookings.pop(ctx.idempotency_key, None) is not None:
            bank.stock += 1

    m.step("charge", charge, compensation=refund)
    m.step("reserve", reserve, compensation=release)
    m.step("ship", lambda ctx: None)
    return m


async def explore(machine: SagaStateMachine, bank: Bank, **kw: Any) -> Any:
    return await explore_failures(machine, setup=bank.reset, snapshot=bank.snapshot, **kw)


async def test_a_correct_saga_passes_every_scenario() -> None:
    bank = Bank()
    report = await explore(correct_saga(bank), bank)
    report.assert_ok()
    names = [r.name for r in report.results]
    for expected in ("happy path", "charge raises once", "reserve always raises",
                     "ship times out (outcome unknown)", "compensation of charge always raises",
                     "crash before write 3 (happy path)", "crash after write 5 (ship failing)"):
        assert expected in names
    assert all(r.outcome == "ok" for r in report.results if r.outcome != "skipped")


async def test_a_service_that_ignores_the_fence_is_caught_when_a_worker_stalls() -> None:
    bank = Bank()
    bank.admit = lambda ctx: None  # type: ignore[method-assign]  # no fence, no tombstone
    report = await explore(correct_saga(bank), bank, crashes=False)
    stalled = {r.name: r for r in report.results if "stalls" in r.name}
    assert {"charge", "reserve"} == {name.split()[4] for name in stalled}
    for result in stalled.values():
        assert "violated" == result.outcome
        assert any("after compensation the outside world differs" in v
                   for v in result.violations)
    assert all(r.outcome != "violated" for r in report.results if "stalls" not in r.name)


async def test_without_a_snapshot_a_late_call_that_lands_is_reported_by_itself() -> None:
    bank = Bank()
    bank.admit = lambda ctx: None  # type: ignore[method-assign]  # no fence, no tombstone
    report = await explore_failures(correct_saga(bank), setup=bank.reset, crashes=False)
    stalled = [r for r in report.results if "stalls" in r.name]
    assert {"violated"} == {r.outcome for r in stalled}
    assert all(any("landed after the saga was compensated" in v for v in r.violations)
               for r in stalled)


async def test_a_stalled_workers_late_call_refused_by_its_fence_leaves_nothing_behind() -> None:
    bank = Bank()
    report = await explore(correct_saga(bank), bank, crashes=False)
    stalled = [r for r in report.results if "stalls" in r.name]
    assert 2 == len(stalled)
    assert {"ok"} == {r.outcome for r in stalled}
    assert {"compensated"} == {r.final_state for r in stalled}


@pytest.mark.parametrize("build", [(build_trip, trip_services),
                                   (build_payment, payment_services)],
                         ids=["trip", "payment"])
async def test_the_example_sagas_have_no_violations(build: Any) -> None:
    make, services = build
    svc = services()
    report = await explore_failures(make(svc), {"flight": "LH1"}, setup=svc.reset,
                                    snapshot=svc.snapshot)
    report.assert_ok()
    assert len(report.results) >= 40


async def test_a_compensation_that_undoes_the_wrong_thing_is_caught() -> None:
    bank = Bank()
    m = correct_saga(bank)

    async def release_wrong(ctx: StepContext) -> None:
        # undoes the charge's booking record instead of this step's reservation
        if bank.bookings.pop(f"{ctx.saga_id}:charge", None) is not None:
            bank.stock += 1

    m._defs[1].step.compensation = release_wrong
    report = await explore(m, bank, crashes=False)
    assert any("outside world differs from before the saga" in v and "bookings" in v
               for v in report.violations)
    with pytest.raises(AssertionError, match="bookings"):
        report.assert_ok()


async def test_a_step_that_ignores_its_idempotency_key_is_caught() -> None:
    bank = Bank()
    m = correct_saga(bank)

    async def reserve_every_time(ctx: StepContext) -> None:
        bank.stock -= 1
        bank.bookings[ctx.idempotency_key] = "reserved"

    m._defs[1].step.action = reserve_every_time
    report = await explore(m, bank)
    assert any("not idempotent under its key" in v for v in report.violations)


async def test_a_compensation_that_is_not_idempotent_is_caught() -> None:
    bank = Bank()
    m = correct_saga(bank)

    async def refund_every_time(ctx: StepContext) -> None:
        bank.bookings.pop(ctx.idempotency_key, None)
        bank.balance += 30

    m._defs[0].step.compensation = refund_every_time
    report = await explore(m, bank)
    assert any("balance" in v for v in report.violations)


async def test_a_missing_compensation_is_caught() -> None:
    bank = Bank()
    m = correct_saga(bank)
    m._defs[0].step.compensation = None
    report = await explore(m, bank, crashes=False)
    assert any("balance" in v and "outside world differs" in v for v in report.violations)


async def test_compensations_in_the_wrong_order_are_reported() -> None:
    from statesaga.testing.explore import _Explorer
    from statesaga.testing.scenarios import Journal, Scenario

    bank = Bank()
    m = correct_saga(bank)
    explorer = _Explorer(m, None, InMemoryStore(), None, None)
    from statesaga import Orchestrator

    record = await Orchestrator().run(m, saga_id="x")
    failed = Scenario("made up", "completed")
    journal = Journal(ran=["charge", "reserve"], undone=["charge", "reserve"])
    problems = explorer.check(failed, record, journal, None, None)
    assert any("compensations ran as ['charge', 'reserve'], expected []" in p
               for p in problems)


async def test_crash_scenarios_on_an_in_memory_store_recover_through_the_same_memory() -> None:
    bank = Bank()
    report = await explore(correct_saga(bank), bank, store=InMemoryStore())
    crashes = [r for r in report.results if r.name.startswith("crash")]
    assert crashes
    assert {"ok"} == {r.outcome for r in crashes}
    report.assert_ok()


async def test_a_saga_with_nothing_to_compensate_does_not_pass_silently() -> None:
    m = SagaStateMachine("readonly")
    m.step("look", lambda ctx: None)
    report = await explore_failures(m, crashes=False)
    assert any("nothing to compensate" in n for n in report.notes)
    with pytest.raises(AssertionError, match="nothing to compensate"):
        report.assert_ok()


async def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="bound must be >= 1"):
        await explore_failures(correct_saga(Bank()), bound=0)


async def test_the_report_prints_as_a_table_and_as_html() -> None:
    bank = Bank()
    report = await explore(correct_saga(bank), bank, crashes=False)
    text = str(report)
    assert text.startswith("failure matrix of 'shop'")
    assert "charge always raises" in text
    assert "<table>" in report._repr_html_()


async def test_the_deadline_scenarios_are_skipped_when_there_is_no_deadline() -> None:
    bank = Bank()
    report = await explore(correct_saga(bank), bank, crashes=False)
    deadline = [r for r in report.results if "deadline" in r.name]
    assert {"the machine has no deadline"} == {r.reason for r in deadline}


async def test_an_explicit_graph_is_explored_along_every_event_path() -> None:
    from statesaga.examples.trip_choreography import build_trip_choreography

    report = await explore_failures(build_trip_choreography(), bound=4)
    report.assert_ok()
    names = [r.name for r in report.results]
    assert "FlightBooked → HotelBooked → PaymentCharged" in names
    assert "FlightBooked → HotelFailed" in names
    assert "FlightBooked → HotelBooked → timeout" in names
    crashes = [r for r in report.results if r.name.startswith("crash")]
    assert crashes
    assert {"ok"} == {r.outcome for r in crashes}


async def test_the_event_paths_stop_at_the_bound() -> None:
    from statesaga.examples.trip_choreography import build_trip_choreography

    report = await explore_failures(build_trip_choreography(), bound=1, crashes=False)
    names = [r.name for r in report.results]
    assert "FlightBooked → HotelFailed" in names
    assert "FlightBooked → HotelBooked → PaymentFailed" not in names



def test_exploring_prints_nothing_though_its_sagas_get_stuck_on_purpose() -> None:
    import subprocess
    import sys

    code = """
import asyncio
from statesaga.examples.trip import build_trip, trip_services
from statesaga.testing import explore_failures
svc = trip_services()
report = asyncio.run(explore_failures(build_trip(svc), {"flight": "LH1"}, setup=svc.reset,
                                      crashes=False))
assert any(r.final_state == "failed" for r in report.results)  # stuck sagas, on purpose
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert (0, "", "") == (done.returncode, done.stdout, done.stderr)
