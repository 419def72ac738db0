"""`from_transitions`: a `transitions` configuration made a durable saga, and the kernel's
semantics checked against a stock `transitions.Machine` given the same configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transitions import Machine

from statesaga import (
    Event,
    Orchestrator,
    SagaDefinitionError,
    SagaStateMachine,
    SagaStatus,
    SQLiteStore,
)
from statesaga.codec import storable_text


class Log:
    """Callbacks that say when they ran; conditions that answer as told."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def cb(self, label: str) -> Any:
        def f(*args: Any) -> None:
            self.calls.append(label)
        f.__qualname__ = label
        return f

    def check(self, label: str, answer: bool) -> Any:
        def f(*args: Any) -> bool:
            self.calls.append(label)
            return answer
        f.__qualname__ = label
        return f


@st.composite
def configurations(draw: st.DrawFn) -> Any:
    """A random machine every state of which can reach `completed`, built twice (one log
    each), and the events to fire."""
    n = draw(st.integers(1, 4))
    states = [f"s{i}" for i in range(n)]
    events = ["e0", "e1", "e2"]
    logs = (Log(), Log())

    def build(log: Log, spec: dict[str, Any]) -> dict[str, Any]:
        out = []
        for t in spec["transitions"]:
            out.append({
                "trigger": t["trigger"], "source": t["source"], "dest": t["dest"],
                "conditions": [log.check(f"cond {t['id']}.{i}", a)
                               for i, a in enumerate(t["conditions"])],
                "unless": [log.check(f"unless {t['id']}.{i}", a)
                           for i, a in enumerate(t["unless"])],
                "before": [log.cb(f"before {t['id']}")] if t["before"] else [],
                "after": [log.cb(f"after {t['id']}")] if t["after"] else []})
        return {"initial": "s0", "transitions": out, "states": [
            {"name": s, "on_enter": [log.cb(f"enter {s}")] if s in spec["enter"] else [],
             "on_exit": [log.cb(f"exit {s}")] if s in spec["exit"] else []}
            for s in states] + ["completed"]}

    transitions: list[dict[str, Any]] = []
    tid = 0
    for i, s in enumerate(states):  # a spine that reaches completed, unguarded, tried last
        extra = draw(st.lists(st.tuples(st.sampled_from(events),
                                        st.sampled_from([*states, "completed"]),
                                        st.lists(st.booleans(), max_size=2),
                                        st.lists(st.booleans(), max_size=2),
                                        st.booleans(), st.booleans()), max_size=3))
        for trigger, dest, conds, unless, before, after in extra:
            transitions.append({"id": tid, "trigger": trigger, "source": s, "dest": dest,
                                "conditions": conds or [True], "unless": unless,
                                "before": before, "after": after})
            tid += 1
        nxt = states[i + 1] if i + 1 < n else "completed"
        transitions.append({"id": tid, "trigger": "go", "source": s, "dest": nxt,
                            "conditions": [], "unless": [], "before": draw(st.booleans()),
                            "after": draw(st.booleans())})
        tid += 1
    spec = {"transitions": transitions,
            "enter": draw(st.sets(st.sampled_from(states))),
            "exit": draw(st.sets(st.sampled_from(states)))}
    fired = draw(st.lists(st.sampled_from([*events, "go"]), max_size=8))
    return build(logs[0], spec), fired, logs[0], build(logs[1], spec), logs[1]


class Model:
    state: str


@settings(max_examples=150, deadline=None)
@given(configurations())
async def test_the_kernel_moves_and_calls_back_as_a_stock_transitions_machine_does(
        drawn: Any) -> None:
    theirs_config, events, theirs_log, ours_config, ours_log = drawn
    model = Model()
    Machine(model=model, states=theirs_config["states"], transitions=theirs_config[
        "transitions"], initial="s0", auto_transitions=False, ignore_invalid_triggers=True)
    saga = SagaStateMachine.from_transitions("differential", ours_config)
    state = "s0"
    for event in events:
        if state == "completed":
            break
        theirs_log.calls.append(f"-- {event}")
        ours_log.calls.append(f"-- {event}")
        model.trigger(event)  # type: ignore[attr-defined]
        state = await saga.handle_event(state, event, {})
        assert model.state == state
    assert theirs_log.calls == ours_log.calls


async def test_an_action_runs_after_on_exit_and_before_on_enter() -> None:
    calls: list[str] = []
    m = SagaStateMachine("order")
    m.add_state("a", on_exit=lambda ctx: calls.append("exit a"))
    m.add_state("b", on_enter=lambda ctx: calls.append("enter b"))
    m.add_transition("a", "b", "go", action=lambda event, ctx: calls.append("action"),
                     guard=lambda event, ctx: calls.append("guard") or True)
    m.add_transition("b", "completed", "done")
    assert "b" == await m.handle_event("a", "go", {})
    assert ["guard", "exit a", "action", "enter b"] == calls


def order_config(calls: list[str]) -> dict[str, Any]:
    """An order machine as a `transitions` user writes it."""
    def note(label: str) -> Any:
        return lambda ctx: calls.append(f"{label} {ctx.data['order']}")

    return {
        "states": ["placed", {"name": "paid", "on_enter": note("paid")}, "shipped"],
        "initial": "placed",
        "transitions": [
            {"trigger": "pay", "source": "placed", "dest": "paid",
             "conditions": lambda ctx: ctx.event.payload.get("amount", 0) > 0},
            ["ship", "paid", "shipped"],
            {"trigger": "deliver", "source": "shipped", "dest": "completed",
             "after": note("delivered")},
            {"trigger": "cancel", "source": "*", "dest": "compensated"},
        ],
    }


async def test_a_transitions_machine_becomes_a_durable_saga_that_survives_its_process(
        tmp_path: Path) -> None:
    calls: list[str] = []
    undone: list[str] = []
    config = order_config(calls)
    saga = SagaStateMachine.from_transitions(
        "order", config, compensations={"paid": lambda ctx: undone.append("refund")})
    first = Orchestrator(store=SQLiteStore(tmp_path / "o.db"))
    await first.run(saga, {"order": 7}, saga_id="o-7")
    await first.send("o-7", "pay", {"amount": 30})
    await first.send("o-7", "ship")
    await first.store.close()

    again = Orchestrator(store=SQLiteStore(tmp_path / "o.db"), sagas=[saga])  # a new process
    record = await again.send("o-7", "cancel", {"reason": "customer called"})
    await again.store.close()
    assert SagaStatus.COMPENSATED is record.status
    assert ["refund"] == undone
    assert ["paid 7"] == calls
    assert "cancel: customer called" == record.error


async def test_a_guard_of_a_transitions_machine_reads_the_event() -> None:
    saga = SagaStateMachine.from_transitions("order", order_config([]))
    assert "placed" == await saga.handle_event("placed", Event("pay", {"amount": 0}), {"order": 1})
    assert "paid" == await saga.handle_event("placed", Event("pay", {"amount": 5}), {"order": 1})


@pytest.mark.parametrize(("config", "problem"), [
    ({"states": ["a"], "transitions": [["go", "a", "completed"]]}, "`initial` must name"),
    ({"states": ["a"], "initial": "a", "before_state_change": "x",
      "transitions": [["go", "a", "completed"]]}, "'before_state_change' are not supported"),
    ({"states": ["a"], "initial": "a", "transitions": [
        {"trigger": "go", "source": "a", "dest": None}]}, "internal transitions"),
    ({"states": ["a"], "initial": "a", "transitions": [
        {"trigger": "go", "source": "a", "dest": "completed", "conditions": "is_ready"}]},
     "no model whose methods could be named"),
    ({"states": ["a"], "initial": "a", "transitions": [
        {"trigger": "go", "source": "a", "dest": "completed", "prepare": print}]},
     "'prepare' is not supported"),
])
def test_a_configuration_statesaga_cannot_honour_is_refused_saying_why(
        config: dict[str, Any], problem: str) -> None:
    with pytest.raises(SagaDefinitionError, match=problem):
        SagaStateMachine.from_transitions("bad", config).validate()


def test_callbacks_may_be_importable_dotted_paths() -> None:
    saga = SagaStateMachine.from_transitions("dotted", {
        "states": [{"name": "a", "on_enter": "statesaga.codec.storable_text"}],
        "initial": "a", "transitions": [["go", "a", "completed"]]})
    assert storable_text is saga.graph.defs["a"].on_enter
