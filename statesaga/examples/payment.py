"""The payment saga from the design: debit, credit the merchant, update inventory, notify.

If updating the inventory fails after the payment account was debited and the merchant
credited, the merchant credit is undone, then the debit.
"""

from __future__ import annotations

from typing import Any

from ..context import StepContext
from ..definition import SagaStateMachine
from ..retry import Retry
from .services import ExampleServices

STEPS = {
    "debit_payment_account": ("accounts", "debit", "refund"),
    "credit_merchant_account": ("merchants", "credit", "reverse"),
    "update_inventory": ("inventory", "reserve", "release"),
    "send_notification": ("notifications", "send", None),
}


def payment_services() -> ExampleServices:
    return ExampleServices(STEPS)


def build_payment(services: ExampleServices | None = None) -> SagaStateMachine:
    """The payment saga over `services` (fresh fakes if None)."""
    svc = services if services is not None else payment_services()
    payment = SagaStateMachine("payment", deadline=30.0)

    def action(step: str) -> Any:
        name, op, _ = STEPS[step]

        async def run(ctx: StepContext) -> dict[str, Any]:
            value = ctx.data.get("amount", 10) if name != "inventory" else ctx.data.get("sku", "")
            await svc.services[name].do(op, ctx.idempotency_key, value, fence=ctx.fence)
            return {op: value}

        run.__qualname__ = f"build_payment.{step}"
        return run

    for step, (_, _, undo_op) in STEPS.items():
        payment.step(step, action(step),
                     compensation=svc.undo_of(step, build_payment) if undo_op else None,
                     retry=Retry(attempts=2, backoff=0.01))
    return payment


services = payment_services()
payment = build_payment(services)
"""The payment saga over the module's own fake `services`."""
