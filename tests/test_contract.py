"""The event contract of a machine that mixes waiting states with steps and parallel groups."""

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
