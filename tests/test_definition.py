"""SagaStateMachine: building, the mirror, checking, versions, and handle_event."""

from __future__ import annotations

from typing import Any

import pytest
import structlog
from hypothesis import given, settings

from statesaga import Retry, SagaDefinitionError, SagaStateMachine, SagaStep, StepContext
from statesaga.graph import FORWARD, MIRROR, STUCK
from statesaga.testing.strategies import explicit_graphs


def noop(ctx: StepContext) -> None:
    return None


def four_steps() -> SagaStateMachine:
    m = SagaStateMachine("four")
    for name in ("a", "b", "c", "d"):
        m.step(name, noop, compensation=noop if name != "c" else None)
    return m


def edges(m: SagaStateMachine, event: str | None = None) -> set[tuple[str, str]]:
    return {(t.source, t.dest) for t in m.transitions if event is None or t.event == event}


def test_states_list_forward_then_mirror_then_terminals() -> None:
    expected = ("a", "b", "c", "d", "compensating_a", "compensating_b", "compensating_d",
                "completed", "compensated", "failed")
    assert expected == four_steps().states


def test_steps_chain_on_succeed_and_the_last_completes() -> None:
    expected = {("a", "b"), ("b", "c"), ("c", "d"), ("d", "completed")}
    assert expected == {(t.source, t.dest) for t in four_steps().transitions
                        if t.kind == FORWARD}


def test_mirror_edges_reverse_forward_edges_and_skip_states_without_compensation() -> None:
    m = four_steps()
    expected = {("compensating_d", "compensating_b"), ("compensating_b", "compensating_a"),
                ("compensating_a", "compensated")}
    assert expected == {(t.source, t.dest) for t in m.transitions if t.kind == MIRROR}


def test_failure_goes_to_the_last_completed_step_and_timeout_includes_its_own() -> None:
    m = four_steps()
    assert ("d", "compensating_b") in edges(m, "fail")
    assert ("d", "compensating_d") in edges(m, "timeout")
    assert ("a", "compensated") in edges(m, "fail")
    assert ("c", "compensating_b") in edges(m, "timeout")  # c has nothing to undo


def test_a_failing_compensation_leads_to_failed_and_retry_leads_back() -> None:
    m = four_steps()
    assert {("compensating_a", "failed"), ("compensating_b", "failed"),
            ("compensating_d", "failed")} == {(t.source, t.dest) for t in m.transitions
                                              if t.kind == STUCK}
    assert ("failed", "compensating_b") in edges(m, "retry")


def test_decorator_form_names_the_step_after_the_function() -> None:
    m = SagaStateMachine("deco")

    @m.step(retry=Retry(attempts=3), timeout=2.0)
    async def book_flight(ctx: StepContext) -> dict[str, Any]:
        return {"id": 1}

    @book_flight.compensation
    async def cancel_flight(ctx: StepContext) -> None:
        return None

    spec = m.graph.defs["book_flight"].step
    assert ("book_flight", cancel_flight, 3, 2.0) == (spec.name, spec.compensation,
                                                      spec.retry.attempts, spec.timeout)
    assert "compensating_book_flight" in m.states


def test_bare_decorator_and_a_plain_function_both_add_steps() -> None:
    m = SagaStateMachine("bare")

    @m.step
    def first(ctx: StepContext) -> None:
        return None

    m.step(noop)
    assert ("first", "noop") == m.graph.forward


def test_handle_of_a_decorated_step_still_calls_the_action() -> None:
    m = SagaStateMachine("callable")

    @m.step
    def double(ctx: Any) -> int:
        return 2 * ctx

    assert 42 == double(21)


def test_class_form_is_named_in_snake_case_and_uses_compensate() -> None:
    class BookHotel(SagaStep):
        def execute(self, ctx: StepContext) -> None:
            return None

        def compensate(self, ctx: StepContext) -> None:
            return None

    m = SagaStateMachine("cls")
    step = BookHotel()
    m.step(step)
    m.step(BookHotel(), name="book_second_hotel")
    assert ("book_hotel", "book_second_hotel") == m.graph.forward
    assert step.compensate == m.graph.defs["book_hotel"].step.compensation


def test_version_is_stable_and_changes_with_the_graph() -> None:
    assert four_steps().version == four_steps().version
    other = four_steps()
    other.step("e", noop)
    assert other.version != four_steps().version


def test_version_changes_when_a_callable_is_replaced() -> None:
    def other(ctx: StepContext) -> None:
        return None

    m = SagaStateMachine("four")
    for name in ("a", "b", "c", "d"):
        m.step(name, other if name == "b" else noop, compensation=noop if name != "c" else None)
    assert m.version != four_steps().version


def test_every_definition_problem_is_listed_at_once() -> None:
    m = SagaStateMachine("bad", deadline=-1)
    m.add_state("x")
    m.add_state("x")
    m.add_state("completed")
    m.add_state("compensating_y")
    m.add_state("y", on_enter=3)  # type: ignore[arg-type]
    m.add_state("island")
    m.add_state("dead_end")
    m.add_transition("x", "nowhere", "go")
    m.add_transition("ghost", "y", "go")
    m.add_transition("x", "y", "fail")
    m.add_transition("x", "dead_end", "go_on")
    m.add_transition("y", "completed", "done")
    m.step("no_action")
    with pytest.raises(SagaDefinitionError) as err:
        m.validate()
    problems = "\n".join(err.value.problems)
    for fragment in ("deadline must be", "'x' is used twice", "'completed' clashes",
                     "'compensating_y' clashes", "on_enter must be callable",
                     "unknown dest state 'nowhere'", "unknown source state 'ghost'",
                     "event 'fail' is reserved", "'island' is unreachable",
                     "'dead_end' has no path to 'completed'", "'no_action': has no action"):
        assert fragment in problems
    assert len(err.value.problems) >= 11
    assert isinstance(err.value, ValueError)


def test_an_empty_machine_is_a_definition_error() -> None:
    with pytest.raises(SagaDefinitionError, match="no states"):
        SagaStateMachine("empty").validate()


def test_a_loop_driven_by_events_is_allowed() -> None:
    m = SagaStateMachine("loop")
    m.add_state("a")
    m.add_state("b")
    m.add_transition("a", "b", "go")
    m.add_transition("b", "a", "back")
    m.add_transition("b", "completed", "done")
    assert ("b", "a", "back") in {(t.source, t.dest, t.event) for t in m.validate().transitions}


def test_a_loop_among_automatic_steps_is_refused_as_it_would_spin() -> None:
    m = SagaStateMachine("spin")
    m.step("a", lambda ctx: None)
    m.step("b", lambda ctx: None)
    m.add_transition("a", "b", "succeed")
    m.add_transition("b", "a", "succeed", guard=lambda event, ctx: True)
    m.add_transition("b", "completed", "succeed")
    with pytest.raises(SagaDefinitionError, match=r"loop with no event in it: a -> b -> a"):
        m.validate()


def test_an_unguarded_duplicate_transition_is_refused() -> None:
    m = SagaStateMachine("dup")
    m.add_state("a")
    m.add_transition("a", "completed", "go")
    m.add_transition("a", "compensated", "go")
    with pytest.raises(SagaDefinitionError, match="can never fire"):
        m.validate()


def test_bad_step_options_are_definition_errors() -> None:
    m = SagaStateMachine("opts")
    m.step("a", noop, retry=3, compensation_retry="x", timeout=0)  # type: ignore[arg-type]
    m.step("b", 42)  # type: ignore[arg-type]
    with pytest.raises(SagaDefinitionError) as err:
        m.validate()
    text = str(err.value)
    assert "retry must be a statesaga.Retry" in text
    assert "compensation_retry must be" in text
    assert "timeout must be a number" in text
    assert "action must be callable" in text


def test_a_timeout_on_a_plain_function_is_allowed_it_runs_in_a_thread() -> None:
    m = SagaStateMachine("sync_timeout")
    m.step("a", noop, timeout=5)
    assert ("a", "completed", "compensated", "failed") == m.validate().states


def test_two_compensations_for_one_step_are_refused() -> None:
    m = SagaStateMachine("two")
    handle = m.step("a", noop, compensation=noop)
    handle.compensation(noop)
    with pytest.raises(SagaDefinitionError, match="two compensations"):
        m.validate()


def test_a_definition_in_use_cannot_change() -> None:
    m = four_steps()
    m.freeze("a test")
    with pytest.raises(SagaDefinitionError, match="already in use by a test"):
        m.step("e", noop)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"attempts": 0}, "attempts must be an int >= 1"),
     ({"backoff": -1}, "backoff must be a number >= 0"),
     ({"jitter": 2}, "jitter is a fraction"),
     ({"non_retryable": (int,)}, "non_retryable must hold exception classes")],
)
def test_retry_validates_itself_when_built(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(SagaDefinitionError, match=fragment):
        Retry(**kwargs)


def test_retry_backs_off_exponentially_up_to_the_cap() -> None:
    policy = Retry(attempts=5, backoff=0.1, max_backoff=0.3, jitter=0)
    assert [0.1, 0.2, 0.3, 0.3] == [policy.delay(n) for n in (1, 2, 3, 4)]


# -- handle_event ----------------------------------------------------------------------


def explicit_graph(calls: list[str]) -> SagaStateMachine:
    m = SagaStateMachine("explicit")

    async def exit_a(ctx: StepContext) -> None:
        calls.append(f"exit a {ctx.step} {ctx.data['who']}")

    m.add_state("a", on_exit=exit_a)
    m.add_state("b", on_enter=lambda ctx: calls.append(f"enter b {ctx.step} {ctx.event}"))
    m.add_transition("a", "b", "go", action=lambda ev, ctx: calls.append(f"action {ev}"),
                     guard=lambda ev, ctx: calls.append("guard") or ctx.data["who"] != "blocked")
    m.add_transition("b", "completed", "done")
    m.add_transition("b", "compensated", "cancelled")
    return m


async def test_handle_event_runs_guard_exit_action_enter_in_order() -> None:
    calls: list[str] = []
    state = await explicit_graph(calls).handle_event("a", "go", {"who": "me"})
    assert "b" == state
    assert ["guard", "exit a a me", "action go", "enter b b go"] == calls


async def test_handle_event_with_a_false_guard_leaves_the_state() -> None:
    calls: list[str] = []
    assert "a" == await explicit_graph(calls).handle_event("a", "go", {"who": "blocked"})
    assert ["guard"] == calls


async def test_handle_event_takes_an_object_with_a_type() -> None:
    class Event:
        type = "done"

    assert "completed" == await explicit_graph([]).handle_event("b", Event(), None)


async def test_an_event_with_no_transition_leaves_the_state_and_logs_it() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    with structlog.testing.capture_logs() as logs:
        assert "a" == await explicit_graph([]).handle_event("a", "unheard_of", None)
    assert [("saga.event_ignored", "a", "unheard_of")] == [
        (e["event"], e["state"], e["trigger"]) for e in logs]


async def test_a_failure_event_walks_into_the_mirror() -> None:
    m = four_steps()
    assert "compensating_b" == await m.handle_event("d", "fail", None)
    assert "compensating_a" == await m.handle_event("compensating_b", "succeed", None)


async def test_handle_event_with_an_unknown_state_is_a_definition_error() -> None:
    with pytest.raises(SagaDefinitionError, match="'nope' is not a state"):
        await four_steps().handle_event("nope", "go", None)


async def test_handle_event_with_a_nameless_event_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="event must be a name"):
        await four_steps().handle_event("a", 42, None)


# -- properties of the mirror ----------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(explicit_graphs())
def test_mirror_has_one_state_per_compensable_state_and_never_leaves_it(
        m: SagaStateMachine) -> None:
    compensable = {s for s in m.graph.forward if m.graph.compensable(s)}
    mirrors = {s for s in m.states if s.startswith("compensating_")}
    assert {f"compensating_{s}" for s in compensable} == mirrors
    for t in m.transitions:
        if t.source in mirrors:
            assert t.dest in mirrors or t.dest in ("compensated", "failed")
    forward_pairs = {(t.source, t.dest) for t in m.transitions if t.kind == FORWARD}
    for t in m.transitions:
        if t.kind == MIRROR and t.dest != "compensated":
            # compensating_B -> compensating_A only when A precedes B on a forward path
            a, b = t.dest.removeprefix("compensating_"), t.source.removeprefix("compensating_")
            assert _path(forward_pairs, a, b)


def _path(pairs: set[tuple[str, str]], a: str, b: str) -> bool:
    todo, seen = [a], {a}
    while todo:
        n = todo.pop()
        if n == b:
            return True
        for s, d in pairs:
            if s == n and d not in seen:
                seen.add(d)
                todo.append(d)
    return False
