"""explore_failures on parallel groups: every branch failing, every branch compensation
failing, crashes with branches in flight, in two orders; and what it catches there."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from statesaga import InMemoryStore, Orchestrator, SagaStateMachine, StepContext
from statesaga.examples.parallel_trip import build_parallel_trip, parallel_trip_services
from statesaga.examples.services import ExampleServices
from statesaga.records import Kind, SagaRecord, SagaStatus, Transition
from statesaga.testing import explore_failures
from statesaga.testing.invariants import compensation_problems
from statesaga.testing.report import FailureReport
from statesaga.testing.scenarios import Journal

BRANCHES = ("book_flight", "book_hotel", "rent_car")


async def explore_trip(svc: ExampleServices, machine: SagaStateMachine | None = None,
                       **kw: Any) -> FailureReport:
    with structlog.testing.capture_logs():  # stuck sagas are expected here: keep quiet
        return await explore_failures(machine or build_parallel_trip(svc), {"flight": "LH1"},
                                      setup=svc.reset, snapshot=svc.snapshot, **kw)


@pytest.fixture(scope="module")
def report() -> FailureReport:
    return asyncio.run(explore_trip(parallel_trip_services()))


def names(report: FailureReport) -> set[str]:
    return {r.name for r in report.results}


# -- what it runs ------------------------------------------------------------------------


def test_every_branch_raises_and_times_out_as_declared_and_in_reverse(
        report: FailureReport) -> None:
    for b in BRANCHES:
        for more in ("", " (branches finishing in reverse)"):
            for what in ("raises once", "always raises", "times out (outcome unknown)"):
                assert f"{b} {what}{more}" in names(report)


def test_every_branch_compensation_fails_as_declared_and_in_reverse(
        report: FailureReport) -> None:
    for b in BRANCHES:
        for more in ("", " (branches finishing in reverse)"):
            assert f"compensation of {b} raises once{more}" in names(report)
            assert f"compensation of {b} always raises{more}" in names(report)
    stuck = next(r for r in report.results if r.name == "compensation of book_hotel always "
                 "raises (branches finishing in reverse)")
    assert ("ok", "failed") == (stuck.outcome, stuck.final_state)


def test_a_crash_at_every_write_is_tried_with_the_branches_in_flight(
        report: FailureReport) -> None:
    crashes = [r for r in report.results if r.name.startswith("crash")]
    paths = {r.name.split("(", 1)[1].rstrip(")") for r in crashes}
    assert {"happy path", "happy path, branches finishing in reverse",
            "charge_payment failing", "rent_car failing",
            "book_flight failing, branches finishing in reverse"} == paths
    assert "crash after write 4 (rent_car failing)" in names(report)  # two branches done
    assert {"ok"} == {r.outcome for r in crashes}


def test_the_report_says_how_the_interleavings_were_bounded(report: FailureReport) -> None:
    (bound,) = report.bounds
    assert "parallel group 'book'" in bound
    assert "2 of their 6 orders, as declared and in reverse" in bound
    assert () == report.notes  # a bound is said, it is no problem of the saga's
    assert "note (bounded): parallel group 'book'" in str(report)
    assert "note (bounded):" in report._repr_html_()


def test_the_exploration_of_the_parallel_trip_takes_a_second_or_so(
        report: FailureReport) -> None:
    assert len(report) > 120
    assert report.seconds < 5


# -- what it finds -----------------------------------------------------------------------


def test_a_correct_parallel_trip_has_no_violations(report: FailureReport) -> None:
    report.assert_ok()


async def test_a_branch_answering_while_its_sibling_fails_is_undone() -> None:
    world: dict[str, str] = {}

    class SlowStore(InMemoryStore):
        async def commit(self, commit: Any) -> Any:
            done = await super().commit(commit)
            if commit.transition.event == "fail":
                await asyncio.sleep(0.05)  # the failure takes a while to be written ...
            return done

    async def flight(ctx: StepContext) -> None:
        raise RuntimeError("no seats")

    async def hotel(ctx: StepContext) -> None:
        await asyncio.sleep(0.02)  # ... and the hotel answers meanwhile
        world["hotel"] = "booked"

    async def cancel_hotel(ctx: StepContext) -> None:
        world.pop("hotel", None)

    m = SagaStateMachine("race")
    with m.parallel("book"):
        m.step("flight", flight, compensation=lambda ctx: None)
        m.step("hotel", hotel, compensation=cancel_hotel)
    record = await Orchestrator(store=SlowStore()).run(m, saga_id="r-1")
    assert ("compensated", {}) == (record.state, world)


async def test_a_branch_compensation_that_undoes_the_wrong_thing_is_caught() -> None:
    svc = parallel_trip_services()
    machine = build_parallel_trip(svc)

    async def cancel_the_flight_instead(ctx: StepContext) -> None:
        await svc.flights.undo("cancel", f"{ctx.saga_id}:book_flight")

    next(d for d in machine._defs if d.name == "book_hotel").step.compensation = (
        cancel_the_flight_instead)
    report = await explore_trip(svc, machine, crashes=False)
    wrong = [v for v in report.violations if "outside world differs" in v and "hotels" in v]
    assert wrong
    assert any(v.startswith("charge_payment always raises") for v in wrong)
    with pytest.raises(AssertionError, match="hotels"):
        report.assert_ok()


async def test_a_branch_without_the_compensation_it_needs_is_caught() -> None:
    svc = parallel_trip_services()
    machine = build_parallel_trip(svc)
    next(d for d in machine._defs if d.name == "rent_car").step.compensation = None
    report = await explore_trip(svc, machine, crashes=False)
    assert any("cars" in v and "outside world differs" in v for v in report.violations)


# -- the invariants, on made-up journals -------------------------------------------------


def _record(*moves: tuple[str | None, str, str, str | None, str]) -> SagaRecord:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    history = tuple(Transition(at, source, dest, event, step, kind=Kind(kind))
                    for source, dest, event, step, kind in moves)
    return SagaRecord("s-1", "g", "v", history[-1].dest, SagaStatus.COMPENSATED, {}, {}, None,
                      history, at, at)


def _group() -> SagaStateMachine:
    m = SagaStateMachine("g")
    m.step("pre", lambda ctx: None, compensation=lambda ctx: None)
    with m.parallel("book"):
        for b in ("a", "b", "c"):
            m.step(b, lambda ctx: None, compensation=lambda ctx: None)
    return m


A_FAILS_THEN_UNDONE = (
    (None, "pre", "start", None, "start"), ("pre", "book", "succeed", "pre", "forward"),
    ("book", "book", "succeed", "b", "lane"),
    ("book", "compensating_book", "fail", "a", "failure"),  # c was still running
    ("compensating_book", "compensating_book", "succeed", "c", "lane"),
    ("compensating_book", "compensating_pre", "succeed", "b", "mirror"),
    ("compensating_pre", "compensated", "succeed", "pre", "mirror"))


def test_a_groups_branches_are_undone_in_any_order_before_the_steps_before_it() -> None:
    graph, record = _group().graph, _record(*A_FAILS_THEN_UNDONE)
    for undone in (["c", "b", "pre"], ["b", "c", "pre"]):
        assert [] == compensation_problems(graph, record, Journal(["pre", "b", "c"], undone))
    late = compensation_problems(graph, record, Journal(["pre", "b", "c"], ["b", "pre", "c"]))
    assert ["compensations ran as ['b', 'pre', 'c'], expected [['b', 'c'], 'pre'] (the "
            "completed compensable steps, newest first; a group's branches at once, in any "
            "order)"] == late


def test_a_cancelled_branch_that_is_not_undone_is_reported() -> None:
    graph, record = _group().graph, _record(*A_FAILS_THEN_UNDONE)
    problems = compensation_problems(graph, record, Journal(["pre", "b"], ["b", "pre"]))
    assert any("expected [['b', 'c'], 'pre']" in p for p in problems)  # c may have happened


def test_undoing_the_branch_whose_failure_walked_the_group_back_is_reported() -> None:
    graph, record = _group().graph, _record(*A_FAILS_THEN_UNDONE)
    problems = compensation_problems(graph, record,
                                     Journal(["pre", "b", "c"], ["a", "b", "c", "pre"]))
    assert ("compensated branch a of book, whose failure walked the group back (a failed "
            "branch did not happen: it is not undone)") in problems
