"""The event contract of a machine that mixes waiting states with steps, parallel groups and
sub-sagas (whose own waiting states it checks under their step)."""

from __future__ import annotations

import pytest

from statesaga import InMemoryStore, SagaDefinitionError, SagaStateMachine
from statesaga.choreography import command
from statesaga.contract import check_contract
from statesaga.participants import Participant


def mixed() -> SagaStateMachine:
    """Ask a partner and wait for the answer, book two things at once, then wait again."""
    m = SagaStateMachine("mixed", deadline=60)
    m.add_state("asking", on_enter=command("Ask"))
    with m.parallel("book"):
        m.step("flight", lambda ctx: None, compensation=lambda ctx: None)
        m.step("hotel", lambda ctx: None)
    m.add_state("confirming", on_enter=command("Confirm"))
    m.add_transition("asking", "book", "Answered")
    m.add_transition("book", "confirming", "succeed")
    m.add_transition("confirming", "completed", "Confirmed")
    return m


def partner() -> Participant:
    p = Participant("partner", InMemoryStore())
    p.on("Ask", emits=("Answered",))(lambda e, s: None)
    p.on("Confirm", emits=("Confirmed",))(lambda e, s: None)
    return p


def test_a_group_and_its_branches_are_steps_with_nothing_to_wait_for() -> None:
    contract = check_contract(mixed(), [partner()])
    assert [("asking", ("Answered",), ("Ask",)), ("confirming", ("Confirmed",), ("Confirm",))
            ] == [(s.state, s.waits_for, s.emits) for s in contract.states]
    assert "book" not in str(contract)


def test_a_gap_around_a_group_is_still_found() -> None:
    lonely = Participant("partner", InMemoryStore())
    lonely.on("Ask", emits=("Answered",))(lambda e, s: None)
    with pytest.raises(SagaDefinitionError) as err:
        check_contract(mixed(), [lonely])
    assert "state 'confirming' waits for 'Confirmed', which no participant emits" in str(
        err.value)
    assert "'book'" not in str(err.value)


def asking(deadline: float | None = None) -> SagaStateMachine:
    """A choreographed child: ask a partner, wait for the answer (no failure event)."""
    m = SagaStateMachine("ask", deadline=deadline)
    m.add_state("asking", on_enter=command("Ask"))
    m.add_transition("asking", "completed", "Answered")
    return m


def parent_of(child: SagaStateMachine, *, deadline: float | None = None,
              timeout: float | None = None) -> SagaStateMachine:
    m = SagaStateMachine("parent", deadline=deadline)
    m.step("prepare", lambda ctx: None, compensation=lambda ctx: None)
    m.step("ask", child, timeout=timeout)
    return m


def test_a_sub_sagas_waiting_states_are_in_the_contract_under_its_step() -> None:
    contract = check_contract(parent_of(asking(), deadline=60), [partner()])
    assert [("ask/asking", ("Answered",), ("Ask",))] == [
        (s.state, s.waits_for, s.emits) for s in contract.states]


def test_a_gap_inside_a_sub_saga_is_found_and_named_by_its_step() -> None:
    with pytest.raises(SagaDefinitionError) as err:
        check_contract(parent_of(asking(), deadline=60), [])
    assert "state 'ask/asking' waits for 'Answered', which no participant emits" in str(
        err.value)
    assert "state 'ask/asking' emits 'Ask', which no participant handles" in str(err.value)


@pytest.mark.parametrize(("child", "deadline", "timeout", "bounded"), [
    (None, None, None, False), (30.0, None, None, True), (None, 60.0, None, True),
    (None, None, 5.0, True)])
def test_a_sub_sagas_wait_is_bounded_by_its_own_deadline_the_parents_or_the_steps_timeout(
        child: float | None, deadline: float | None, timeout: float | None,
        bounded: bool) -> None:
    machine = parent_of(asking(child), deadline=deadline, timeout=timeout)
    if bounded:
        check_contract(machine, [partner()])
        return
    with pytest.raises(SagaDefinitionError, match="state 'ask/asking' has no route to "
                                                  "'compensated' on failure"):
        check_contract(machine, [partner()])
