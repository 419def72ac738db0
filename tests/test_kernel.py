"""The kernel: every rule of a saga as a pure function, tested without an event loop."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from statesaga import SagaStateMachine, SagaStatus
from statesaga.kernel import (
    Position,
    assumed,
    candidates,
    decide,
    due,
    ignore,
    record,
    replay,
    start,
)
from statesaga.records import Kind, Trigger

AT = datetime(2026, 12, 1, tzinfo=UTC)


def noop(ctx: Any) -> None:
    return None


def abcd() -> SagaStateMachine:
    """a (undoable), b (nothing to undo), c (undoable), d (undoable)."""
    m = SagaStateMachine("abcd")
    m.step("a", noop, compensation=noop)
    m.step("b", noop)
    m.step("c", noop, compensation=noop)
    m.step("d", noop, compensation=noop)
    return m.validate()


def succeed(m: SagaStateMachine, pos: Position) -> Position:
    move = decide(m.graph, pos, Trigger.SUCCEED, candidates(m.graph, pos.state, "succeed")[0])
    assert move is not None
    return move.after


@pytest.mark.parametrize(("pos", "event", "dest", "kind", "undo"), [
    (Position("a"), "fail", "compensated", Kind.FAILURE, ()),
    (Position("a"), "timeout", "compensating_a", Kind.UNKNOWN, ("a",)),
    (Position("b", ("a",)), "fail", "compensating_a", Kind.FAILURE, ("a",)),
    (Position("b", ("a",)), "abort", "compensating_a", Kind.UNKNOWN, ("a",)),
    (Position("c", ("a",)), "fail", "compensating_a", Kind.FAILURE, ("a",)),
    (Position("c", ("a",)), "timeout", "compensating_c", Kind.UNKNOWN, ("a", "c")),
    (Position("c", ("a",)), "invalid_result", "compensating_c", Kind.UNKNOWN, ("a", "c")),
    (Position("d", ("a", "c")), "no_route", "compensating_d", Kind.UNKNOWN, ("a", "c", "d")),
    (Position("compensating_c", ("a", "c")), "succeed", "compensating_a", Kind.MIRROR, ("a",)),
    (Position("compensating_a", ("a",)), "succeed", "compensated", Kind.MIRROR, ()),
    (Position("compensating_a", ("a",)), "fail", "failed", Kind.STUCK, ("a",)),
    (Position("failed", ("a",)), "retry", "compensating_a", Kind.RESUME, ("a",)),
    (Position("c", ("a",)), "retry", "c", Kind.RETRY, ("a",)),
    (Position("compensating_a", ("a",)), "retry_unknown", "compensating_a", Kind.RETRY, ("a",)),
    # given up (its write refused): what ran in its state is left to undo, as if unknown
    (Position("c", ("a",)), "give_up", "failed", Kind.STUCK, ("a", "c")),
    (Position("b", ("a",)), "give_up", "failed", Kind.STUCK, ("a",)),
    (Position("compensating_c", ("a", "c")), "give_up", "failed", Kind.STUCK, ("a", "c")),
])
def test_each_event_in_each_kind_of_state_moves_as_the_mirror_says(
        pos: Position, event: str, dest: str, kind: Kind, undo: tuple[str, ...]) -> None:
    move = decide(abcd().graph, pos, event, error="why")
    assert move is not None
    assert (dest, kind, undo) == (move.dest, move.kind, move.after.undo)


@pytest.mark.parametrize(("pos", "event"), [
    (Position("compensating_a", ("a",)), "abort"),  # already compensating
    (Position("completed", ()), "abort"),
    (Position("compensated", ()), "retry"),
    (Position("failed", ()), "succeed"),
    (Position("completed", ()), "give_up"),
    (Position("a"), "no_such_event"),
    (Position("a"), "succeed"),  # a step's success takes a declared transition: see routes
])
def test_an_event_with_no_rule_there_moves_nothing(pos: Position, event: str) -> None:
    assert decide(abcd().graph, pos, event) is None


def test_the_happy_path_pushes_every_undoable_step_once() -> None:
    m = abcd()
    pos = Position("a")
    for expected in ("b", "c", "d", "completed"):
        pos = succeed(m, pos)
        assert expected == pos.state
    assert ("a", "c", "d") == pos.undo


def test_failure_at_step_c_compensates_a_only_and_records_why() -> None:
    m = abcd()
    pos = succeed(m, succeed(m, Position("a")))
    move = decide(m.graph, pos, "fail", error="card declined")
    assert move is not None
    assert ("compensating_a", "card declined", "card declined") == (
        move.dest, move.after.cause, move.after.error)
    back = decide(m.graph, move.after, "succeed")
    assert back is not None
    assert ("compensated", (), "card declined") == (back.dest, back.after.undo, back.after.error)


def test_retries_count_attempts_and_remember_doubt_until_the_state_changes() -> None:
    m = abcd()
    pos = Position("a")
    for event in ("retry", "retry_unknown", "retry"):
        move = decide(m.graph, pos, event)
        assert move is not None
        pos = move.after
    assert (3, True) == (pos.attempt, pos.in_doubt)
    after = succeed(m, pos)
    assert (0, False) == (after.attempt, after.in_doubt)


def test_an_ignored_event_leaves_the_position_as_it_was() -> None:
    pos = Position("b", ("a",), attempt=2)
    move = ignore(pos, "stray")
    assert (Kind.IGNORED, pos, "b") == (move.kind, move.after, move.dest)


def loop() -> SagaStateMachine:
    """Ask for a card, charge it; a declined card asks again (a loop driven by events)."""
    m = SagaStateMachine("card_loop")
    m.add_state("ask_card", compensation=noop)
    m.add_state("charging", compensation=noop)
    m.add_transition("ask_card", "charging", "card_given")
    m.add_transition("charging", "ask_card", "declined")
    m.add_transition("charging", "completed", "charged")
    m.add_transition("charging", "compensated", "gave_up")
    return m.validate()


def test_each_visit_of_a_state_in_a_loop_is_undone_newest_first() -> None:
    m = loop()
    pos = Position("ask_card")
    for event in ("card_given", "declined", "card_given", "declined", "card_given"):
        (edge,) = candidates(m.graph, pos.state, event)
        move = decide(m.graph, pos, event, edge)
        assert move is not None
        pos = move.after
    assert ("ask_card", "charging", "ask_card", "charging", "ask_card") == pos.undo
    (edge,) = candidates(m.graph, pos.state, "gave_up")
    move = decide(m.graph, pos, "gave_up", edge)
    assert move is not None
    walk = [move.dest]
    pos = move.after
    while pos.state != "compensated":
        move = decide(m.graph, pos, "succeed")
        assert move is not None
        walk.append(move.dest)
        pos = move.after
    assert ["compensating_ask_card", "compensating_charging", "compensating_ask_card",
            "compensating_charging", "compensating_ask_card", "compensated"] == walk


def test_record_builds_the_transition_and_a_commit_that_releases_a_finished_saga() -> None:
    m = abcd()
    move = decide(m.graph, Position("compensating_a", ("a",)), "succeed")
    assert move is not None
    transition, commit = record(m.graph, move, saga_id="s", revision=7, at=AT, step="a",
                                attempt=1, worker="w", owner="w", lease=99.0)
    assert ("compensating_a", "compensated", "succeed", Kind.MIRROR) == (
        transition.source, transition.dest, transition.event, transition.kind)
    assert (7, SagaStatus.COMPENSATED, None, None) == (
        commit.revision, commit.status, commit.owner, commit.lease)


def test_record_keeps_the_lease_of_a_saga_that_goes_on() -> None:
    m = abcd()
    _, commit = record(m.graph, decide(m.graph, Position("a"), "retry"),  # type: ignore[arg-type]
                       saga_id="s", revision=2, at=AT, owner="w", lease=99.0)
    assert ("w", 99.0, SagaStatus.RUNNING) == (commit.owner, commit.lease, commit.status)


def test_a_waiting_state_times_out_at_its_timer_or_the_deadline_whichever_first() -> None:
    m = SagaStateMachine("timers")
    m.add_state("wait", timeout=30)
    m.add_transition("wait", "completed", "ok")
    graph = m.validate().graph
    assert 130.0 == due(graph, "wait", 100.0, None)
    assert 120.0 == due(graph, "wait", 100.0, 120.0)
    assert due(abcd().graph, "a", 100.0, 120.0) is None  # a step runs; it does not wait


def test_a_state_reached_the_first_way_assumes_the_undo_of_that_way() -> None:
    m = abcd()
    assert ("a", "c") == assumed(m.graph, "d").undo
    assert ("a", "c") == assumed(m.graph, "compensating_c").undo


def test_the_start_move_creates_the_saga_in_its_initial_state() -> None:
    move = start(abcd().graph)
    assert ("", "a", Kind.START, Position("a")) == (move.source, move.dest, move.kind,
                                                    move.after)


EVENTS = ("succeed", "fail", "timeout", "abort", "retry", "retry_unknown", "invalid_result",
          "stray")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(EVENTS), max_size=25))
def test_replaying_a_recorded_history_gives_back_the_position_the_moves_made(
        events: list[str]) -> None:
    m = abcd()
    graph = m.graph
    first = start(graph)
    history = [record(graph, first, saga_id="s", revision=1, at=AT)[0]]
    pos = first.after
    for event in events:
        edges = candidates(graph, pos.state, event)
        move = decide(graph, pos, event, edges[0] if edges else None, error=f"{event}!")
        if move is None:
            move = ignore(pos, event)
            transition = record(graph, move, saga_id="s", revision=2, at=AT,
                                reason=f"ignored: no transition on {event!r}")[0]
        else:
            transition = record(graph, move, saga_id="s", revision=2, at=AT,
                                error=f"{event}!")[0]
        history.append(transition)
        pos = move.after
        assert pos == replay(graph, history)
    assert set(pos.undo) <= graph.undoable


def trip() -> SagaStateMachine:
    """reserve (undoable), then flight, hotel (undoable) and car (not) at once, then charge."""
    m = SagaStateMachine("parallel_trip")
    m.step("reserve", noop, compensation=noop)
    with m.parallel("book"):
        m.step("flight", noop, compensation=noop)
        m.step("hotel", noop, compensation=noop)
        m.step("car", noop)
    m.step("charge", noop, compensation=noop)
    return m.validate()


def play(m: SagaStateMachine, pos: Position, *moves: tuple[str, str | None]) -> Position:
    for event, lane in moves:
        edges = candidates(m.graph, pos.state, event)
        move = decide(m.graph, pos, event, edges[0] if edges and lane is None else None,
                      error=f"{event} {lane}", lane=lane)
        assert move is not None, (event, lane, pos)
        pos = move.after
    return pos


def statuses(pos: Position) -> dict[str, str]:
    return {lane.name: lane.status for lane in pos.lanes}


def test_entering_a_group_starts_every_branch() -> None:
    pos = play(trip(), Position("reserve"), ("succeed", None))
    assert ("book", {"flight": "running", "hotel": "running", "car": "running"}) == (
        pos.state, statuses(pos))


def test_the_group_goes_on_once_every_branch_succeeded_whatever_the_order() -> None:
    m = trip()
    pos = play(m, Position("reserve"), ("succeed", None), ("succeed", "car"),
               ("succeed", "flight"))
    assert ("book", "done") == (pos.state, statuses(pos)["flight"])
    pos = play(m, pos, ("succeed", "hotel"))
    assert ("charge", ("reserve", "book"), ()) == (pos.state, pos.undo, pos.lanes)


def test_a_failing_branch_undoes_the_done_and_the_running_ones_not_itself() -> None:
    m = trip()
    pos = play(m, Position("reserve"), ("succeed", None), ("succeed", "flight"),
               ("fail", "car"))
    assert "compensating_book" == pos.state
    assert {"flight": "undoing", "hotel": "undoing", "car": "skipped"} == statuses(pos)
    pos = play(m, pos, ("succeed", "hotel"))
    assert ("compensating_book", "undone") == (pos.state, statuses(pos)["hotel"])
    pos = play(m, pos, ("succeed", "flight"))
    assert ("compensating_reserve", ("reserve",)) == (pos.state, pos.undo)


def test_a_branch_that_failed_alone_with_nothing_else_done_walks_straight_back() -> None:
    m = SagaStateMachine("two")
    m.step("first", noop, compensation=noop)
    with m.parallel("g"):
        m.step("x", noop, compensation=noop)
        m.step("y", noop)
    m.validate()
    pos = play(m, Position("first"), ("succeed", None), ("succeed", "y"), ("fail", "x"))
    assert ("compensating_first", ("first",)) == (pos.state, pos.undo)


def test_a_timed_out_branch_is_undone_too() -> None:
    m = trip()
    pos = play(m, Position("reserve"), ("succeed", None), ("timeout", "hotel"))
    assert {"flight": "undoing", "hotel": "undoing", "car": "skipped"} == statuses(pos)


def test_retries_count_per_branch() -> None:
    m = trip()
    pos = play(m, Position("reserve"), ("succeed", None), ("retry", "hotel"),
               ("retry_unknown", "hotel"))
    hotel = next(x for x in pos.lanes if x.name == "hotel")
    assert (2, True) == (hotel.attempt, hotel.in_doubt)


def test_a_stuck_branch_compensation_resumes_with_only_what_is_left() -> None:
    m = trip()
    pos = play(m, Position("reserve"), ("succeed", None), ("succeed", "flight"),
               ("succeed", "hotel"), ("succeed", "car"), ("fail", None))
    assert "compensating_book" == pos.state  # charge failed: the whole group is undone
    pos = play(m, pos, ("succeed", "flight"), ("fail", "hotel"))
    assert "failed" == pos.state
    again = decide(m.graph, pos, "retry")
    assert again is not None
    assert ("compensating_book", {"flight": "undone", "hotel": "undoing", "car": "skipped"}) == (
        again.dest, statuses(again.after))


def test_an_abort_in_a_group_undoes_every_branch_that_may_have_happened() -> None:
    m = trip()
    pos = play(m, Position("reserve"), ("succeed", None), ("succeed", "flight"), ("abort", None))
    assert {"flight": "undoing", "hotel": "undoing", "car": "skipped"} == statuses(pos)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("succeed", "fail", "timeout", "retry", "abort")),
                          st.sampled_from((None, "flight", "hotel", "car"))), max_size=30))
def test_replaying_a_parallel_saga_gives_back_the_position_the_moves_made(
        moves: list[tuple[str, str | None]]) -> None:
    m = trip()
    graph = m.graph
    pos = start(graph).after
    history = [record(graph, start(graph), saga_id="s", revision=1, at=AT)[0]]
    for event, lane in moves:
        edges = candidates(graph, pos.state, event)
        move = decide(graph, pos, event, edges[0] if edges and not pos.lanes else None,
                      error="x", lane=lane)
        if move is None:
            continue
        history.append(record(graph, move, saga_id="s", revision=2, at=AT, step=lane,
                              error="x")[0])
        pos = move.after
        assert pos == replay(graph, history)


def test_a_group_given_up_leaves_its_done_and_running_branches_for_a_retry_to_undo() -> None:
    m = trip()
    pos = play(m, Position("reserve"), ("succeed", None), ("succeed", "flight"))
    given_up = decide(m.graph, pos, Trigger.GIVE_UP, error="refused")
    assert given_up is not None
    assert ("failed", ("reserve", "book")) == (given_up.dest, given_up.after.undo)
    resumed = decide(m.graph, given_up.after, Trigger.RETRY)
    assert resumed is not None
    assert "compensating_book" == resumed.dest
    assert {"flight": "undoing", "hotel": "undoing", "car": "skipped"} == statuses(
        resumed.after)
