"""Drawings of parallel groups (a fork and a join, mirrored) and of loops, with and without
a saga on them."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import attrs
import pytest
from test_diagrams import Drawings, edges, layout, needs_dot, of_class

from statesaga import Orchestrator, SagaRecord, SagaStateMachine, SagaStatus
from statesaga.diagrams import to_dot, to_mermaid
from statesaga.diagrams.examples import InstantClock, example_drawings
from statesaga.diagrams.trace import Trace
from statesaga.examples.parallel_trip import build_parallel_trip, parallel_trip_services

BRANCHES = ("book_flight", "book_hotel", "rent_car")
UNDO = tuple(f"compensating_{b}" for b in BRANCHES)


@pytest.fixture(scope="module")
def drawings() -> Drawings:
    return asyncio.run(example_drawings())


async def _noop(ctx: Any) -> None:
    return None


def node_line(dot: str, node: str) -> str:
    return dot.split(f"\t{node} [", 1)[1].split("\n")[0]


def hold_saga() -> SagaStateMachine:
    """A loop: a hold may be extended, which reserves again; each visit is undone."""
    m = SagaStateMachine("hold")
    m.add_state("reserve", compensation=_noop)
    m.add_state("hold", compensation=_noop)
    m.add_state("pay", compensation=_noop)
    m.add_transition("reserve", "hold", "reserved")
    m.add_transition("hold", "reserve", "extend")
    m.add_transition("hold", "pay", "confirm")
    m.add_transition("hold", "compensated", "expired")
    m.add_transition("pay", "completed", "paid")
    return m


def groups_saga() -> SagaStateMachine:
    """A group first, a group last, and a branch with nothing to undo."""
    m = SagaStateMachine("groups")
    with m.parallel("book"):
        m.step("a", _noop, compensation=_noop)
        m.step("b", _noop, compensation=_noop)
    with m.parallel("pay"):
        m.step("c", _noop, compensation=_noop)
        m.step("d", _noop)
    return m


# -- a group, as drawn -------------------------------------------------------------------


def test_a_group_is_a_fork_its_branches_and_a_join_in_a_cluster_named_for_it() -> None:
    dot = to_dot(build_parallel_trip())
    assert "subgraph cluster_book {" in dot
    assert re.search(r"\tbook \[label=book [^\n]*shape=box", dot)  # the fork bar names it
    assert re.search(r'\t"~join~book" \[label=""', dot)
    lanes = of_class(dot, "lane")
    assert {("book", b) for b in BRANCHES} | {(b, "~join~book") for b in BRANCHES} <= lanes
    assert ("hold_budget", "book") in of_class(dot, "forward")  # into the fork
    assert ("~join~book", "charge_payment") in of_class(dot, "forward")  # out of the join
    assert "parallel: fork, branches at once, join" in dot


def test_its_compensation_is_the_same_fork_and_join_upside_down_in_the_mirror() -> None:
    dot = to_dot(build_parallel_trip())
    assert "subgraph cluster_compensating_book {" in dot
    lanes = of_class(dot, "lane")
    assert {("compensating_book", u) for u in UNDO} | {
        (u, "~join~compensating_book") for u in UNDO} <= lanes
    mirror = of_class(dot, "mirror")
    assert ("compensating_charge_payment", "compensating_book") in mirror  # walks in below
    assert ("~join~compensating_book", "compensating_hold_budget") in mirror  # out above
    failing = {(a, b) for a, b, at in edges(dot) if at["class"] == "failure"
               and at.get("ltail") == "cluster_book"}  # any branch: from the group's border
    assert {("~join~book", "compensating_book"), ("book", "compensating_hold_budget")} == failing


def test_a_branch_with_nothing_to_undo_has_no_compensation_and_the_cluster_says_so() -> None:
    dot = to_dot(groups_saga())
    assert "compensating_d" not in dot
    assert "nothing to undo for d" in dot
    assert ("compensating_pay", "compensating_c") in of_class(dot, "lane")


@needs_dot
def test_the_branches_sit_side_by_side_between_the_bars_and_the_mirror_is_level() -> None:
    _, at = layout(to_dot(build_parallel_trip()))
    fork, join = at["book"][1], at["~join~book"][1]
    assert 1 == len({round(at[b][1], 2) for b in BRANCHES})  # one row
    assert fork > at["book_flight"][1] > join  # between the bars (y grows upwards)
    xs = [at[b][0] for b in BRANCHES]
    assert sorted(xs) == xs  # in the order declared
    assert at["~join~compensating_book"][1] == fork  # the mirror's exit level with the fork
    assert at["compensating_book"][1] == join  # where the walk comes in level with the join
    assert {at[b][1] for b in BRANCHES} == {at[u][1] for u in UNDO}
    assert min(at[u][0] for u in UNDO) > max(xs)  # in the mirror column, to the right
    assert at["~rail~compensating_book"][0] > max(at[u][0] for u in UNDO)  # then the rail


@needs_dot
def test_groups_first_last_and_in_a_row_lay_out() -> None:
    _, at = layout(to_dot(groups_saga()))
    assert at["~start"][1] > at["book"][1] > at["~join~book"][1] > at["pay"][1]
    assert at["~join~pay"][1] > at["completed"][1]
    assert at["failed"][0] > max(x for name, (x, _) in at.items()
                                 if not name.startswith(("~rail", "~legend", "failed")))


# -- a saga on it ------------------------------------------------------------------------


def test_a_compensated_parallel_trip_shows_the_branches_done_failed_and_cancelled(
        drawings: Drawings) -> None:
    machine, record, _ = drawings["parallel-trip-compensated"]
    dot = to_dot(machine, record)
    taken = of_class(dot, "taken")
    assert {("book", b) for b in BRANCHES} <= taken  # every branch started
    assert ("book_flight", "~join~book") in taken  # the flight was booked
    assert ("book_hotel", "~join~book") not in taken  # the hotel failed
    assert ("rent_car", "~join~book") not in taken  # the car was still being rented
    assert "cancelled: outcome unknown" in node_line(dot, "rent_car")
    assert "failed 1\u00d7" in node_line(dot, "book_hotel")
    assert ("~join~book", "compensating_book") in taken
    undone = {("compensating_book", "compensating_book_flight"),
              ("compensating_book_flight", "~join~compensating_book"),
              ("compensating_book", "compensating_rent_car"),
              ("compensating_rent_car", "~join~compensating_book"),
              ("~join~compensating_book", "compensating_hold_budget")}
    assert undone <= taken  # the flight and the cancelled car undone, then the budget
    assert not {e for e in taken if "compensating_book_hotel" in e}
    assert "not undone: it failed" in node_line(dot, "compensating_book_hotel")
    assert set() == of_class(dot, "would")


def _midway(record: SagaRecord, upto: int, status: SagaStatus) -> SagaRecord:
    history = record.history[:upto]
    return attrs.evolve(record, history=history, state=history[-1].dest, status=status,
                        error=None)


async def _completed_trip() -> tuple[SagaStateMachine, SagaRecord]:
    machine = build_parallel_trip()
    record = await Orchestrator(clock=InstantClock()).run(machine, saga_id="t-1")
    return machine, record


async def test_a_saga_running_in_a_group_would_undo_the_done_and_running_branches() -> None:
    machine, record = await _completed_trip()
    assert "lane" == record.history[2].kind  # the flight is done, the others still run
    running = _midway(record, 3, SagaStatus.RUNNING)
    dot = to_dot(machine, running)
    would = of_class(dot, "would")
    assert ("~join~book", "compensating_book") in would  # a failure now undoes the group
    assert {("compensating_book", u) for u in UNDO} <= would
    assert ("~join~compensating_book", "compensating_hold_budget") in would
    assert {"book_hotel", "rent_car"} == Trace(machine, running).running
    assert "peripheries=2" in node_line(dot, "book_hotel")
    assert "peripheries=2" not in node_line(dot, "book_flight")
    assert "would undo if it failed now" in dot


async def test_a_saga_stuck_in_a_branch_compensation_would_undo_only_what_is_left() -> None:
    fakes = parallel_trip_services()
    fakes.fail_at("charge_payment")
    fakes.fail_compensation("book_hotel")
    machine = build_parallel_trip(fakes)
    record = await Orchestrator(clock=InstantClock()).run(machine, saga_id="t-2")
    assert SagaStatus.FAILED is record.status
    dot = to_dot(machine, record)
    stuck = node_line(dot, "compensating_book_hotel")
    assert "stuck here: failed 5\u00d7" in stuck
    assert 'color="#b3261e"' in stuck
    would = of_class(dot, "would")
    assert {("compensating_book", "compensating_book_hotel"),
            ("compensating_book_hotel", "~join~compensating_book")} <= would
    assert ("compensating_book", "compensating_book_flight") not in would  # undone already
    assert ("~join~compensating_book", "compensating_hold_budget") in would
    stub = [at for a, b, at in edges(dot) if b == "~rail~compensating_book"
            and at.get("ltail") == "cluster_compensating_book"]  # from the group's border
    assert ["stuck would taken"] == [at["class"] for at in stub]
    assert "would undo on retry" in dot


async def test_a_saga_undoing_a_group_shows_the_branches_still_undoing() -> None:
    fakes = parallel_trip_services()
    fakes.fail_at("charge_payment")
    machine = build_parallel_trip(fakes)
    record = await Orchestrator(clock=InstantClock()).run(machine, saga_id="t-3")
    lane = next(i for i, t in enumerate(record.history)
                if t.source == "compensating_book" and t.kind == "lane")
    undoing = _midway(record, lane + 1, SagaStatus.COMPENSATING)
    trace = Trace(machine, undoing)
    first = record.history[lane].step
    assert {f"compensating_{b}" for b in BRANCHES if b != first} == trace.running
    dot = to_dot(machine, undoing)
    assert (f"compensating_{first}", "~join~compensating_book") in of_class(dot, "taken")
    assert "still to undo" in dot


# -- loops -------------------------------------------------------------------------------


async def test_a_loop_runs_up_the_left_and_its_earlier_visits_are_undone_on_the_right(
        ) -> None:
    m = hold_saga()
    orchestrator = Orchestrator(clock=InstantClock())
    await orchestrator.run(m, saga_id="h-1")
    for event in ("reserved", "extend", "reserved", "expired"):
        record = await orchestrator.send("h-1", event)
    dot = to_dot(m, record)
    back = next(at for a, b, at in edges(dot) if (a, b) == ("hold", "reserve"))
    assert ("w", "w", "extend") == (back["tailport"], back["headport"], back["label"])
    down = next(at for a, b, at in edges(dot)
                if (a, b) == ("compensating_reserve", "compensating_hold"))
    assert ("e", "e") == (down["tailport"], down["headport"])
    assert {("compensating_reserve", "compensating_hold"),
            ("compensating_hold", "compensating_reserve")} <= of_class(dot, "taken")
    assert "entered 2\u00d7" in node_line(dot, "reserve")
    assert "entered" not in node_line(dot, "pay")


# -- Mermaid -----------------------------------------------------------------------------


def test_mermaid_draws_a_group_as_a_composite_with_a_fork_and_a_join() -> None:
    text = to_mermaid(build_parallel_trip())
    block = text.split("    state book {\n", 1)[1].split("    }\n", 1)[0]
    assert "        state book_fork <<fork>>\n" in block
    assert "        state book_join <<join>>\n" in block
    for b in BRANCHES:
        assert f"        book_fork --> {b}\n" in block
        assert f"        {b} --> book_join\n" in block
    assert "    state compensating_book {\n" in text
    assert "        compensating_book_fork --> compensating_rent_car\n" in text
    assert "    hold_budget --> book : succeed\n" in text
    assert "    book --> charge_payment : succeed\n" in text


def test_mermaid_marks_the_branches_of_a_saga(drawings: Drawings) -> None:
    machine, record, _ = drawings["parallel-trip-compensated"]
    text = to_mermaid(machine, record)
    assert "    class book_flight visited" in text
    assert "    class compensating_rent_car visited" in text
    assert "class compensating_book_hotel" not in text
    assert "cancelled\u2236 outcome unknown" in text
