"""The trip as a choreography: flight, hotel and payment participants react to commands.

    TripBooked -> BookFlight -> FlightBooked -> BookHotel -> HotelBooked
               -> ChargePayment -> PaymentCharged -> completed
    a failure reply (at any point) -> RefundPayment / CancelHotel / CancelFlight
                                      for exactly what happened, newest first

A saga's data may say `{"fail_at": "hotel"}` (flight, hotel or payment) to make that
participant refuse, for demos and tests.
"""

from __future__ import annotations

from typing import Any

from ..choreography import command
from ..definition import SagaStateMachine
from ..events import Event
from ..participants import Participant

SERVICES = (("flight", "BookFlight", "FlightBooked", "FlightFailed", "CancelFlight"),
            ("hotel", "BookHotel", "HotelBooked", "HotelFailed", "CancelHotel"),
            ("payment", "ChargePayment", "PaymentCharged", "PaymentFailed", "RefundPayment"))
STATES = {"flight": "booking_flight", "hotel": "booking_hotel", "payment": "charging_payment"}


def build_trip_choreography(*, timeout: float = 30.0) -> SagaStateMachine:
    """The saga's machine: each state sends its command and waits for the reply."""
    m = SagaStateMachine("trip_choreography")
    for service, do, _, _, undo in SERVICES:
        m.add_state(STATES[service], on_enter=command(do), compensation=command(undo),
                    timeout=timeout)
    nexts = [*STATES.values(), "completed"]
    for (service, _, done, failed, _), dest in zip(SERVICES, nexts[1:], strict=True):
        m.add_transition(STATES[service], dest, done)
        m.add_transition(STATES[service], "compensated", failed)
    return m


def build_participants(store: Any) -> list[Participant]:
    """The flight, hotel and payment services, keeping their bookings in `store`."""
    out = []
    for service, do, done, failed, undo in SERVICES:
        p = Participant(f"{service}s", store)

        def book(event: Event, state: dict[str, Any], service: str = service,
                 done: str = done, failed: str = failed) -> Event:
            if event.payload.get("fail_at") == service:
                return Event(failed, {"reason": f"{service} refused (scripted)"})
            state["booked"] = True
            return Event(done, {service: "ok"})

        def cancel(event: Event, state: dict[str, Any], service: str = service) -> Event:
            state.pop("booked", None)
            return Event(f"{service.title()}Cancelled")

        p.on(do, emits=(done, failed))(book)
        p.on(undo, emits=(f"{service.title()}Cancelled",))(cancel)
        out.append(p)
    return out


trip_choreography = build_trip_choreography()
