"""An order whose payment is a saga of its own: reserve stock, pay (the payment saga, as a
sub-saga `"<order id>/pay"`), ship.

If shipping fails, the payment saga is compensated along its own mirror (its record ends
`compensated`), then the stock is released. If the payment saga compensates itself, the
order's `pay` step failed: only the stock is released.
"""

from __future__ import annotations

from typing import Any

from ..context import StepContext
from ..definition import SagaStateMachine
from .payment import build_payment, payment_services
from .services import ExampleServices

STEPS = {
    "reserve_stock": ("stock", "reserve", "release"),
    "ship": ("shipping", "ship", "recall"),
}


def order_services() -> ExampleServices:
    return ExampleServices(STEPS)


def build_order(services: ExampleServices | None = None,
                payment: SagaStateMachine | None = None) -> SagaStateMachine:
    """The order saga over `services`, paying with `payment` (fresh fakes if None)."""
    svc = services if services is not None else order_services()
    pay = payment if payment is not None else build_payment(payment_services())
    order = SagaStateMachine("order")

    def action(step: str) -> Any:
        name, op, _ = STEPS[step]

        async def run(ctx: StepContext) -> dict[str, Any]:
            await svc.services[name].do(op, ctx.idempotency_key, ctx.data.get("sku", ""),
                                        fence=ctx.fence)
            return {op: ctx.data.get("sku", "")}

        run.__qualname__ = f"build_order.{step}"
        return run

    order.step("reserve_stock", action("reserve_stock"),
               compensation=svc.undo_of("reserve_stock", build_order))
    order.step("pay", pay, data=lambda ctx: {"amount": ctx.data["amount"],
                                             "sku": ctx.data["sku"]})
    order.step("ship", action("ship"), compensation=svc.undo_of("ship", build_order))
    return order
