"""The trip saga: book a flight, book a hotel, charge the payment, send a notification.

It shows all three ways to write a step: the decorator form, the `SagaStep` class form,
and the plain call. The notification has no compensation (a sent message cannot be
unsent), so it is skipped on the way back.
"""

from __future__ import annotations

from typing import Any

from ..context import StepContext
from ..definition import SagaStateMachine
from ..retry import Retry
from ..steps import SagaStep
from ..testing.fakes import FakeService
from .services import ExampleServices

STEPS = {
    "book_flight": ("flights", "reserve", "cancel"),
    "book_hotel": ("hotels", "book", "cancel"),
    "charge_payment": ("payments", "charge", "refund"),
    "send_notification": ("notifications", "send", None),
}


def trip_services() -> ExampleServices:
    return ExampleServices(STEPS)


class BookHotel(SagaStep):
    """The class form: the hotel service is injected; the step is named `book_hotel`."""

    def __init__(self, hotels: FakeService) -> None:
        self.hotels = hotels

    async def execute(self, ctx: StepContext) -> dict[str, Any]:
        room = await self.hotels.do("book", ctx.idempotency_key, ctx.data.get("hotel", "any"),
                                    fence=ctx.fence)
        return {"reservation": ctx.idempotency_key, "room": room}

    async def compensate(self, ctx: StepContext) -> None:
        await self.hotels.undo("cancel", ctx.idempotency_key, fence=ctx.fence)


def build_trip(services: ExampleServices | None = None) -> SagaStateMachine:
    """The trip saga over `services` (fresh fakes if None)."""
    svc = services if services is not None else trip_services()
    trip = SagaStateMachine("trip")

    @trip.step(retry=Retry(attempts=3, backoff=0.01), timeout=5.0)
    async def book_flight(ctx: StepContext) -> dict[str, Any]:
        # the key makes a retry harmless; the fence makes a stalled worker's late call refused
        seat = await svc.flights.do("reserve", ctx.idempotency_key,
                                    ctx.data.get("flight", "LH1"), fence=ctx.fence)
        return {"booking_id": ctx.idempotency_key, "flight": seat}

    @book_flight.compensation
    async def cancel_flight(ctx: StepContext) -> None:
        # ctx.result is None when the booking's outcome is unknown: the key still finds it
        await svc.flights.undo("cancel", ctx.idempotency_key, fence=ctx.fence)

    trip.step(BookHotel(svc.hotels))

    async def charge(ctx: StepContext) -> dict[str, Any]:
        amount = ctx.data.get("amount", 100)
        await svc.payments.do("charge", ctx.idempotency_key, amount, fence=ctx.fence)
        return {"charged": amount}

    async def refund(ctx: StepContext) -> None:
        await svc.payments.undo("refund", ctx.idempotency_key, fence=ctx.fence)

    trip.step("charge_payment", charge, compensation=refund)

    async def notify(ctx: StepContext) -> None:
        await svc.notifications.do("send", ctx.idempotency_key, ctx.data.get("email", "guest"),
                                  fence=ctx.fence)

    trip.step("send_notification", notify)
    return trip


services = trip_services()
trip = build_trip(services)
"""The trip saga over the module's own fake `services` (for the CLI and notebooks)."""
