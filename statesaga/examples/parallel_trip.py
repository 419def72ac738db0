"""The parallel trip: hold the budget, book a flight, a hotel and a car at once, then charge.

The three bookings are branches of the parallel group `book`: they run at the same time,
and the payment waits for all three. If one fails, the others are cancelled and every
booking that may have happened is undone at once, then the budget is released.
"""

from __future__ import annotations

from typing import Any

from ..context import StepContext
from ..definition import SagaStateMachine
from ..retry import Retry
from ..testing.fakes import FakeService
from .services import ExampleServices

STEPS = {
    "hold_budget": ("budgets", "hold", "release"),
    "book_flight": ("flights", "reserve", "cancel"),
    "book_hotel": ("hotels", "book", "cancel"),
    "rent_car": ("cars", "rent", "give_back"),
    "charge_payment": ("payments", "charge", "refund"),
}


def parallel_trip_services() -> ExampleServices:
    return ExampleServices(STEPS)


def _calls(service: FakeService, op: str, undo: str, field: str) -> tuple[Any, Any]:
    """An action doing `op` once under the step's idempotency key, and its undo."""
    async def action(ctx: StepContext) -> dict[str, Any]:
        done = await service.do(op, ctx.idempotency_key, ctx.data.get(field, field),
                                fence=ctx.fence)
        return {"key": ctx.idempotency_key, field: done}

    async def compensation(ctx: StepContext) -> None:
        await service.undo(undo, ctx.idempotency_key,  # by key: a cancelled branch too
                           fence=ctx.fence)

    return action, compensation


def build_parallel_trip(services: ExampleServices | None = None) -> SagaStateMachine:
    """The parallel trip over `services` (fresh fakes if None)."""
    svc = services if services is not None else parallel_trip_services()
    trip = SagaStateMachine("parallel_trip")
    hold, release = _calls(svc.budgets, "hold", "release", "amount")
    trip.step("hold_budget", hold, compensation=release)
    with trip.parallel("book"):
        flight, cancel_flight = _calls(svc.flights, "reserve", "cancel", "flight")
        trip.step("book_flight", flight, compensation=cancel_flight,
                  retry=Retry(attempts=3, backoff=0.01), timeout=5.0)
        hotel, cancel_hotel = _calls(svc.hotels, "book", "cancel", "hotel")
        trip.step("book_hotel", hotel, compensation=cancel_hotel)
        car, give_back = _calls(svc.cars, "rent", "give_back", "car")
        trip.step("rent_car", car, compensation=give_back)
    charge, refund = _calls(svc.payments, "charge", "refund", "amount")
    trip.step("charge_payment", charge, compensation=refund)
    return trip


services = parallel_trip_services()
parallel_trip = build_parallel_trip(services)
"""The parallel trip over the module's own fake `services` (for the CLI and notebooks)."""
