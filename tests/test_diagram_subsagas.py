"""Drawings of sub-sagas: the child machine inside its step, its mirror inside the step's
undo, and with the records of a saga and its child, the path each took."""

from __future__ import annotations

import asyncio
import itertools
import re

import attrs
import pytest
import structlog
from test_diagrams import edges, layout, needs_dot, of_class

from statesaga import (
    InMemoryStore,
    Orchestrator,
    SagaError,
    SagaRecord,
    SagaStateMachine,
    SagaStatus,
)
from statesaga.diagrams import Diagram, load_children, to_dot, to_mermaid
from statesaga.diagrams.examples import InstantClock
from statesaga.examples.order import build_order, order_services
from statesaga.examples.payment import build_payment, payment_services

CHILD = ("debit_payment_account", "credit_merchant_account", "update_inventory",
         "send_notification")
UNDO = tuple(f"compensating_{s}" for s in CHILD[:3])  # a notification is not undone


async def run_order(fail_at: str | None = None, saga_id: str = "order-9"
                    ) -> tuple[object, SagaRecord, list[SagaRecord]]:
    orders, payments = order_services(), payment_services()
    if fail_at is not None:
        (payments if fail_at in CHILD else orders).fail_at(fail_at)
    machine = build_order(orders, build_payment(payments))
    store = InMemoryStore()
    with structlog.testing.capture_logs():
        record = await Orchestrator(store=store, clock=InstantClock()).run(
            machine, {"amount": 25, "sku": "book"}, saga_id=saga_id)
    return machine, record, await load_children(store, machine, record)


def drawn(fail_at: str | None = None) -> tuple[object, SagaRecord, list[SagaRecord], str]:
    machine, record, children = asyncio.run(run_order(fail_at))
    return machine, record, children, to_dot(machine, record, children=children)  # type: ignore[arg-type]


# -- the machine, as drawn ---------------------------------------------------------------


def test_a_sub_saga_step_is_a_cluster_holding_the_child_machine_top_to_bottom() -> None:
    dot = to_dot(build_order())
    assert "subgraph cluster_pay {" in dot
    forward = of_class(dot, "forward")
    chain = ["pay/" + s for s in CHILD]
    assert {(a, b) for a, b in itertools.pairwise(chain)} <= forward
    assert ("pay/send_notification", "pay/completed") in forward
    assert ("pay", "pay/debit_payment_account") in of_class(dot, "start")
    assert re.search(r'\tpay \[label=<pay<BR/><FONT [^>]*>runs sub-saga payment', dot)


def test_its_undo_is_a_cluster_holding_the_childs_mirror_walked_up_from_the_revert() -> None:
    dot = to_dot(build_order())
    assert "subgraph cluster_compensating_pay {" in dot
    mirror = of_class(dot, "mirror")
    assert ("compensating_pay", "pay/compensating_update_inventory") in mirror  # the revert
    up = ["pay/" + s for s in reversed(UNDO)] + ["pay/compensated"]
    assert {(a, b) for a, b in itertools.pairwise(up)} <= mirror
    assert "reverts sub-saga payment" in dot


def test_the_parent_goes_on_from_the_childs_completed_and_walks_back_from_its_compensated(
        ) -> None:
    dot = to_dot(build_order())
    assert ("pay/completed", "ship") in of_class(dot, "forward")
    assert ("pay/compensated", "compensating_reserve_stock") in of_class(dot, "mirror")
    assert ("compensating_ship", "compensating_pay") in of_class(dot, "mirror")
    failures = {(a, b, at.get("ltail")) for a, b, at in edges(dot) if "failure" in at["class"]}
    # the child compensated itself: the step failed, the steps before it are undone
    assert ("pay", "compensating_reserve_stock", "cluster_pay") in failures
    # the child's own failures stay inside it: from its step to its mirror
    assert ("pay/update_inventory", "pay/compensating_credit_merchant_account",
            None) in failures
    assert "sub-saga: its machine in the step, its mirror in the undo" in dot


@needs_dot
def test_each_child_state_is_level_with_its_undo_and_the_child_beside_the_parents_column(
        ) -> None:
    _, nodes = layout(to_dot(build_order()))
    for state, undo in zip(CHILD, UNDO, strict=False):
        assert nodes["pay/" + state][1] == nodes["pay/" + undo][1]
        assert nodes["pay/" + state][0] < nodes["pay/" + undo][0]
    assert nodes["pay"][1] == nodes["pay/compensated"][1]
    assert nodes["pay/completed"][1] == nodes["compensating_pay"][1]
    xs = {nodes[s][0] for s in ("reserve_stock", "pay", "pay/debit_payment_account", "ship")}
    assert 1 == len(xs)  # the forward column runs straight through the child
    assert nodes["pay"][1] > nodes["pay/completed"][1] > nodes["ship"][1]


# -- a saga and its child, as drawn ------------------------------------------------------


def test_a_compensated_order_shows_the_childs_path_and_its_revert_taken() -> None:
    _, _record, children, dot = drawn(fail_at="ship")
    assert ["order-9/pay"] == [c.saga_id for c in children]
    assert SagaStatus.COMPENSATED is children[0].status
    taken = of_class(dot, "taken")
    assert {("pay", "pay/debit_payment_account"),
            ("pay/send_notification", "pay/completed"),
            ("compensating_pay", "pay/compensating_update_inventory"),
            ("pay/compensating_debit_payment_account", "pay/compensated"),
            ("pay/compensated", "compensating_reserve_stock")} <= taken
    assert "label=\"order-9/pay: compensated\"" in dot
    assert re.search(r'\t"pay/compensated" \[[^\n]*peripheries=2', dot)  # where it ended


def test_a_child_that_compensated_itself_shows_its_own_failure_and_the_steps_failure() -> None:
    _, record, _children, dot = drawn(fail_at="update_inventory")
    assert SagaStatus.COMPENSATED is record.status
    taken = of_class(dot, "taken")
    assert ("pay/update_inventory", "pay/compensating_credit_merchant_account") in taken
    assert ("pay", "compensating_reserve_stock") in taken  # the step failed
    assert ("compensating_pay", "pay/compensating_update_inventory") not in taken
    assert re.search(r'\t"pay/update_inventory" \[label=<update_inventory[^\n]*failed', dot)


def test_a_parent_past_its_sub_saga_would_revert_the_childs_whole_mirror() -> None:
    machine, record, children = asyncio.run(run_order())
    at_ship = next(i for i, t in enumerate(record.history) if t.dest == "ship")
    running = attrs.evolve(record, state="ship", status=SagaStatus.RUNNING,
                           history=record.history[: at_ship + 1])
    dot = to_dot(machine, running, children=children)  # type: ignore[arg-type]
    would = of_class(dot, "would")
    assert {("ship", "compensating_pay"),
            ("compensating_pay", "pay/compensating_update_inventory"),
            ("pay/compensating_debit_payment_account", "pay/compensated"),
            ("pay/compensated", "compensating_reserve_stock")} <= would


def test_a_child_record_that_is_not_the_sagas_is_refused_naming_its_children() -> None:
    machine, record, children = asyncio.run(run_order())
    stranger = attrs.evolve(children[0], saga_id="order-1/pay")
    with pytest.raises(SagaError, match=r"'order-1/pay' is not a sub-saga of saga "
                                        r"'order-9': its children are 'order-9/pay'"):
        to_dot(machine, record, children=[stranger])  # type: ignore[arg-type]
    with pytest.raises(SagaError, match="give the parent's record too"):
        Diagram(machine, None, children=children)  # type: ignore[arg-type]


def test_without_the_childs_record_the_cluster_names_the_child_saga() -> None:
    machine, record, _ = asyncio.run(run_order())
    assert 'label="order-9/pay"' in to_dot(machine, record)  # type: ignore[arg-type]


async def test_load_children_finds_the_sub_sagas_a_saga_reached_and_no_other() -> None:
    orders, payments = order_services(), payment_services()
    orders.fail_at("reserve_stock")
    machine = build_order(orders, build_payment(payments))
    orch = Orchestrator(store=InMemoryStore(), clock=InstantClock())
    with structlog.testing.capture_logs():
        record = await orch.run(machine, {"amount": 1, "sku": "x"}, saga_id="o-early")
    assert [] == await load_children(orch.store, machine, record)


# -- Mermaid ------------------------------------------------------------------------------


def test_mermaid_draws_a_sub_saga_as_composites_of_the_child_and_its_mirror() -> None:
    text = to_mermaid(build_order())
    assert 'state "pay (runs sub-saga payment)" as pay {' in text
    assert "        [*] --> pay_debit_payment_account : start" in text
    assert 'state "compensating_pay (reverts payment)" as compensating_pay {' in text
    assert "        [*] --> pay_compensating_update_inventory : revert" in text
    assert "    pay --> ship : succeed" in text


def test_mermaid_marks_the_childs_states_from_its_own_record() -> None:
    machine, record, children, _ = drawn(fail_at="update_inventory")
    text = to_mermaid(machine, record, children=children)  # type: ignore[arg-type]
    assert "    class pay_update_inventory visited" in text
    assert "    class pay_send_notification" not in text  # never reached
    assert "    class pay_compensating_credit_merchant_account visited" in text


async def test_a_child_stuck_undoing_shows_what_it_has_left_not_its_whole_mirror() -> None:
    orders, payments = order_services(), payment_services()
    orders.fail_at("ship")
    payments.fail_compensation("debit_payment_account")
    machine = build_order(orders, build_payment(payments))
    store = InMemoryStore()
    with structlog.testing.capture_logs():
        record = await Orchestrator(store=store, clock=InstantClock()).run(
            machine, {"amount": 25, "sku": "book"}, saga_id="order-7")
    children = await load_children(store, machine, record)
    assert ("failed", ["failed"]) == (record.state, [c.state for c in children])
    dot = to_dot(machine, record, children=children)
    would = of_class(dot, "would")
    assert ("pay/compensating_debit_payment_account", "pay/compensated") in would
    assert ("pay/compensating_update_inventory",
            "pay/compensating_credit_merchant_account") not in would  # undone already
    assert re.search(r'\t"pay/compensating_debit_payment_account" \[[^\n]*stuck here', dot)
    assert 'label="order-7/pay: failed"' in dot


def test_a_child_with_nothing_to_undo_is_drawn_with_an_empty_undo() -> None:
    notify = SagaStateMachine("notify")
    notify.step("send", lambda ctx: None)
    parent = SagaStateMachine("parent")
    parent.step("prepare", lambda ctx: None, compensation=lambda ctx: None)
    parent.step("tell", notify)
    dot = to_dot(parent)
    assert ("compensating_tell", "tell/compensated") in of_class(dot, "mirror")
    assert ("tell/send", "tell/compensated") in of_class(dot, "failure")
    assert ('    state "compensating_tell (reverts notify: nothing to undo)" as '
            "compensating_tell") in to_mermaid(parent)


def test_a_childs_parallel_group_is_one_box_inside_its_step() -> None:
    from statesaga.examples.parallel_trip import build_parallel_trip

    parent = SagaStateMachine("holiday")
    parent.step("ask", lambda ctx: None, compensation=lambda ctx: None)
    parent.step("travel", build_parallel_trip())
    dot = to_dot(parent)
    assert ("travel/hold_budget", "travel/book") in of_class(dot, "forward")
    assert "travel/book_flight" not in dot  # its branches are the child's own drawing's
    assert ("travel/compensating_book", "travel/compensating_hold_budget") in of_class(
        dot, "mirror")
