"""Sub-sagas: a step that runs another machine as a child saga with its own record."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from statesaga import (
    InMemoryStore,
    Orchestrator,
    SagaNotFound,
    SagaNotRegistered,
    SagaStateMachine,
    SagaStatus,
    SagaStore,
    SQLiteStore,
    StepContext,
)
from statesaga.examples.order import build_order, order_services
from statesaga.examples.payment import build_payment, payment_services
from statesaga.orchestrator_children import _reverted


def world() -> tuple[object, object, object]:
    orders, payments = order_services(), payment_services()
    return orders, payments, build_order(orders, build_payment(payments))


async def test_the_child_runs_as_a_saga_of_its_own_and_its_results_are_the_steps(
        saga_store: SagaStore) -> None:
    _orders, _payments, order = world()
    orch = Orchestrator(store=saga_store)
    record = await orch.run(order, {"amount": 25, "sku": "book"}, saga_id="o-1")
    child = await saga_store.load("o-1/pay")
    assert (SagaStatus.COMPLETED, SagaStatus.COMPLETED) == (record.status, child.status)
    assert dict(child.results) == record.results["pay"]
    assert "payment" == child.name
    assert {"o-1", "o-1/pay"} == {s.saga_id for s in await orch.list()}


async def test_a_child_that_compensated_itself_failed_the_parents_step() -> None:
    orders, payments, order = world()
    payments.fail_at("update_inventory")  # type: ignore[attr-defined]
    record = await Orchestrator().run(order, {"amount": 25, "sku": "book"}, saga_id="o-2")
    assert SagaStatus.COMPENSATED is record.status
    assert ("pay", "fail") == (record.history[2].step, record.history[2].event)
    assert "sub-saga 'o-2/pay' compensated itself" in (record.error or "")
    assert {} == orders.stock.effects  # type: ignore[attr-defined]


async def test_a_parent_failing_later_compensates_the_completed_child_along_its_mirror(
        saga_store: SagaStore) -> None:
    orders, payments, order = world()
    orders.fail_at("ship")  # type: ignore[attr-defined]
    orch = Orchestrator(store=saga_store)
    record = await orch.run(order, {"amount": 25, "sku": "book"}, saga_id="o-3")
    child = await saga_store.load("o-3/pay")
    assert (SagaStatus.COMPENSATED, SagaStatus.COMPENSATED) == (record.status, child.status)
    back = next(i for i, t in enumerate(child.history) if t.event == "revert")
    assert "completed" == child.history[back].source
    assert ["compensating_update_inventory", "compensating_credit_merchant_account",
            "compensating_debit_payment_account", "compensated"] == [
        t.dest for t in child.history[back:]]
    assert {} == payments.accounts.effects  # type: ignore[attr-defined]
    assert {} == orders.stock.effects  # type: ignore[attr-defined]


async def test_a_parent_whose_process_stopped_mid_child_is_finished_by_another(
        tmp_path: Path) -> None:
    payments = payment_services()
    payments.fail_at("debit_payment_account", hang=True)  # the first process stalls there
    order = build_order(order_services(), build_payment(payments))
    first = Orchestrator(store=SQLiteStore(tmp_path / "s.db"), lease=0.5)
    await first.start(order, {"amount": 5, "sku": "pen"}, saga_id="o-4")
    running = asyncio.ensure_future(first.recover())
    for _ in range(500):  # until it is inside the child's first step
        if not running.done() and await _state(first.store, "o-4/pay") == \
                "debit_payment_account":
            break
        await asyncio.sleep(0.01)
    assert "pay" == (await first.store.load("o-4")).state
    running.cancel()  # the process is gone (its leases lapse)
    await asyncio.gather(running, return_exceptions=True)
    await first.store.close()
    payments.reset()  # the payment service answers again
    again = Orchestrator(store=SQLiteStore(tmp_path / "s.db"), sagas=[order])
    await asyncio.sleep(0.6)
    report = await again.recover()
    assert {"o-4": SagaStatus.COMPLETED} == {
        r.saga_id: r.status for r in report.recovered if r.saga_id == "o-4"}
    assert SagaStatus.COMPLETED is (await again.store.load("o-4/pay")).status
    await again.store.close()


async def _state(store: SagaStore, saga_id: str) -> str | None:
    try:
        return (await store.load(saga_id)).state
    except SagaNotFound:
        return None


async def test_undoing_a_running_child_whose_definition_is_unknown_fails_instead_of_spinning(
        ) -> None:
    store = InMemoryStore()
    await Orchestrator(store=store).start(build_payment(payment_services()),
                                          {"amount": 5, "sku": "pen"}, saga_id="o-5/pay")
    stranger = Orchestrator(store=store)  # it knows neither the order nor the payment
    with pytest.raises(SagaNotRegistered, match="'o-5/pay' ran under 'payment'"):
        await asyncio.wait_for(_reverted(stranger, "o-5/pay"), 5)


async def test_aborting_a_parent_while_its_child_runs_compensates_the_child_at_once() -> None:
    undone: list[str] = []

    async def charge(ctx: StepContext) -> None:
        await asyncio.Event().wait()  # a slow payment provider

    async def refund(ctx: StepContext) -> None:
        undone.append(ctx.saga_id)

    payment = SagaStateMachine("payment")
    payment.step("charge", charge, compensation=refund)
    order = SagaStateMachine("order")
    order.step("pay", payment)
    orch = Orchestrator(lease=3600)  # nothing may wait for a lease to lapse
    running = asyncio.ensure_future(orch.run(order, saga_id="o-5"))
    while True:
        try:
            if (await orch.store.load("o-5/pay")).state == "charge":
                break
        except SagaNotFound:
            pass
        await asyncio.sleep(0.01)

    record = await asyncio.wait_for(orch.abort("o-5", reason="customer left"), 10)

    assert SagaStatus.COMPENSATED is record.status
    assert SagaStatus.COMPENSATED is (await orch.store.load("o-5/pay")).status
    assert ["o-5/pay"] == undone  # the charge's outcome was unknown: refunded too
    assert SagaStatus.COMPENSATED is (await running).status
