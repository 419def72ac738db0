"""explore_failures on a sub-saga step: the child's steps and compensations failing inside
it, the parent failing after the child completed (the child reverted), crashes at every
write of both sagas; and what it catches there."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from statesaga import SagaStateMachine, StepContext
from statesaga.examples.order import build_order, order_services
from statesaga.examples.payment import build_payment, payment_services
from statesaga.examples.services import ExampleServices
from statesaga.testing import explore_failures
from statesaga.testing.report import FailureReport

CHILD = ("debit_payment_account", "credit_merchant_account", "update_inventory",
         "send_notification")
UNDONE = CHILD[:3]  # a notification is not undone


async def explore_order(orders: ExampleServices, payments: ExampleServices,
                        machine: SagaStateMachine | None = None, **kw: Any) -> FailureReport:
    def setup() -> None:
        orders.reset()
        payments.reset()

    def snapshot() -> dict[str, Any]:
        return {"order": orders.snapshot(), "payment": payments.snapshot()}

    machine = machine or build_order(orders, build_payment(payments))
    with structlog.testing.capture_logs():  # stuck sagas are expected here: keep quiet
        return await explore_failures(machine, {"amount": 25, "sku": "book"}, setup=setup,
                                      snapshot=snapshot, **kw)


@pytest.fixture(scope="module")
def report() -> FailureReport:
    return asyncio.run(explore_order(order_services(), payment_services()))


def names(report: FailureReport) -> set[str]:
    return {r.name for r in report.results}


def result(report: FailureReport, name: str) -> tuple[str, str | None]:
    found = next(r for r in report.results if r.name == name)
    return found.outcome, found.final_state


# -- what it runs ------------------------------------------------------------------------


def test_every_step_of_the_child_raises_and_times_out_inside_its_sub_saga_step(
        report: FailureReport) -> None:
    for s in CHILD:
        for what in ("raises once", "always raises", "times out (outcome unknown)"):
            assert f"pay/{s} {what}" in names(report)
    # the child compensated itself: the parent's step failed, the stock is released
    assert ("ok", "compensated") == result(report, "pay/update_inventory always raises")
    # the child retries its own steps: one failure is absorbed inside it
    assert ("ok", "completed") == result(report, "pay/update_inventory raises once")


def test_every_child_compensation_fails_when_the_child_fails_and_when_it_is_reverted(
        report: FailureReport) -> None:
    for s in UNDONE:
        for what, end in (("raises once", "compensated"), ("always raises", "failed")):
            assert ("ok", end) == result(
                report, f"compensation of pay/{s} {what} (pay/send_notification failing)")
            assert ("ok", end) == result(
                report, f"compensation of pay/{s} {what} (ship failing: pay reverted)")


def test_the_parent_failing_after_the_child_completed_reverts_the_child(
        report: FailureReport) -> None:
    assert ("ok", "compensated") == result(report, "ship always raises")
    assert ("ok", "compensated") == result(report, "pay times out (outcome unknown)")


def test_a_crash_at_every_write_of_both_sagas_is_recovered(report: FailureReport) -> None:
    crashes = [r for r in report.results if r.name.startswith("crash ")]
    paths = {r.name.split("(")[1].rstrip(")") for r in crashes}
    assert {"happy path", "ship failing", "pay/send_notification failing"} == paths
    happy = [r for r in crashes if r.name.endswith("(happy path)")]
    assert len(happy) >= 2 * 8  # the child's writes are among them: more than the parent's
    assert all(r.outcome == "ok" for r in crashes)


def test_the_order_example_has_no_violation_and_says_how_it_was_bounded(
        report: FailureReport) -> None:
    report.assert_ok()
    bound = next(b for b in report.bounds if b.startswith("sub-saga step 'pay'"))
    assert "one level deep" in bound
    assert "a crash at every write (the child's included)" in bound
    assert f"{len(report)} scenarios" in str(report)


# -- what it catches ---------------------------------------------------------------------


def careless_order(orders: ExampleServices, payments: ExampleServices) -> SagaStateMachine:
    """An order whose `pay` step is compensated by something that does not revert the child."""
    order = SagaStateMachine("order")

    async def reserve(ctx: StepContext) -> None:
        await orders.services["stock"].do("reserve", ctx.idempotency_key, "book")

    async def release(ctx: StepContext) -> None:
        await orders.services["stock"].undo("release", ctx.idempotency_key)

    async def ship(ctx: StepContext) -> None:
        await orders.services["shipping"].do("ship", ctx.idempotency_key)

    async def forget(ctx: StepContext) -> None:
        return None  # the payment is never reverted

    order.step("reserve_stock", reserve, compensation=release)
    order.step("pay", build_payment(payments), data=lambda ctx: dict(ctx.data),
               compensation=forget)
    order.step("ship", ship)
    return order


async def test_a_sub_saga_step_that_does_not_revert_its_child_is_caught() -> None:
    orders, payments = order_services(), payment_services()
    report = await explore_order(orders, payments, careless_order(orders, payments),
                                 crashes=False)
    broken = {r.name: r.violations for r in report.results if r.violations}
    assert "ship always raises" in broken
    assert any("sub-saga 'explore-" in v and "/pay' ended in completed under a parent that "
               "ended compensated" in v for v in broken["ship always raises"])
    assert any("the outside world differs" in v for v in broken["ship always raises"])


async def test_a_child_compensation_that_undoes_nothing_is_caught_inside_the_child() -> None:
    orders, payments = order_services(), payment_services()
    payment = build_payment(payments)
    spec = payment.graph.defs["credit_merchant_account"].step

    async def nothing(ctx: StepContext) -> None:
        return None

    lazy = SagaStateMachine("payment", deadline=30.0)
    for name in CHILD:
        s = payment.graph.defs[name].step
        lazy.step(name, s.action, retry=s.retry,
                  compensation=nothing if s is spec else s.compensation)
    report = await explore_order(orders, payments, build_order(orders, lazy), crashes=False)
    assert any("merchants" in v for v in report.violations)
    with pytest.raises(AssertionError, match="the outside world differs"):
        report.assert_ok()


async def test_the_same_order_is_explored_twice_in_one_event_loop() -> None:
    orders, payments = order_services(), payment_services()
    machine = build_order(orders, build_payment(payments))
    first = await explore_order(orders, payments, machine)
    again = await asyncio.wait_for(explore_order(orders, payments, machine), 60)
    assert (len(first), [], []) == (len(again), first.violations, again.violations)
