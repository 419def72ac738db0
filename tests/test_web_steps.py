"""The saga page's steps: a parallel group's branches each on a line, with what became of them."""

from __future__ import annotations

import attrs
import structlog

from statesaga import Orchestrator, SagaRecord, SagaStateMachine, SagaStatus
from statesaga.diagrams.examples import InstantClock
from statesaga.examples.parallel_trip import build_parallel_trip, parallel_trip_services
from statesaga.web.steps import step_statuses


async def hotel_fails() -> tuple[SagaStateMachine, SagaRecord]:
    fakes = parallel_trip_services()
    fakes.fail_at("book_hotel")
    machine = build_parallel_trip(fakes)
    with structlog.testing.capture_logs():
        record = await Orchestrator(clock=InstantClock()).run(machine, saga_id="t-1")
    return machine, record


async def test_each_branch_says_whether_it_was_done_failed_or_cancelled_and_undone() -> None:
    machine, record = await hotel_fails()
    rows = {s.step: (s.forward, s.undo) for s in step_statuses(record, machine)}
    assert ("done", "undone") == rows["book[book_flight]"]
    assert ("failed", "—") == rows["book[book_hotel]"]  # it did not happen: nothing to undo
    assert ("cancelled", "undone") == rows["book[rent_car]"]
    order = [s.step for s in step_statuses(record, machine)]
    assert order.index("book") + 1 == order.index("book[book_flight]")


async def test_without_the_definition_the_branches_are_read_from_the_history() -> None:
    _, record = await hotel_fails()
    steps = {s.step for s in step_statuses(record)}
    assert {"book[book_flight]", "book[book_hotel]", "book[rent_car]"} <= steps


async def test_a_branch_still_being_undone_says_so_and_the_rest_would_be() -> None:
    fakes = parallel_trip_services()
    fakes.fail_at("charge_payment")
    machine = build_parallel_trip(fakes)
    with structlog.testing.capture_logs():
        record = await Orchestrator(clock=InstantClock()).run(machine, saga_id="t-2")
    first = next(i for i, t in enumerate(record.history)
                 if t.source == "compensating_book" and t.kind == "lane")
    history = record.history[:first + 1]
    undoing = attrs.evolve(record, history=history, state=history[-1].dest,
                           status=SagaStatus.COMPENSATING, error=None)
    rows = {s.step: s.undo for s in step_statuses(undoing, machine)}
    done = f"book[{record.history[first].step}]"
    assert "undone" == rows.pop(done)
    assert {"undoing now"} == {rows[f"book[{b}]"] for b in
                               ("book_flight", "book_hotel", "rent_car") if f"book[{b}]" in rows}
    assert "would be undone" == rows["hold_budget"]
