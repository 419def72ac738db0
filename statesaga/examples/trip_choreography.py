"""The trip as a choreography: flight, hotel and payment participants react to commands.

    TripBooked -> BookFlight -> FlightBooked -> BookHotel -> HotelBooked
               -> ChargePayment -> PaymentCharged -> completed
    a failure reply (at any point) -> RefundPayment / CancelHotel / CancelFlight
                                      for exactly what happened, newest first, each
                                      confirmed (PaymentRefunded, HotelCancelled, ...)
                                      before the next is sent

A saga's data may say `{"fail_at": "hotel"}` (flight, hotel or payment) to make that
participant refuse, and `{"fail_undo": "flight"}` to make it refuse to undo, for demos
and tests.
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
UNDONE = {"flight": ("FlightCancelled", "FlightCancelFailed"),
          "hotel": ("HotelCancelled", "HotelCancelFailed"),
          "payment": ("PaymentRefunded", "PaymentRefundFailed")}
STATES = {"flight": "booking_flight", "hotel": "booking_hotel", "payment": "charging_payment"}


def build_trip_choreography(*, timeout: float = 30.0) -> SagaStateMachine:
    """The saga's machine: each state sends its command and waits for the reply."""
    m = SagaStateMachine("trip_choreography")
    for service, do, _, _, undo in SERVICES:
        confirmed, refused = UNDONE[service]
        m.add_state(STATES[service], on_enter=command(do), timeout=timeout,
                    compensation=command(undo, confirmed_by=confirmed, failed_by=refused))
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
            confirmed, refused = UNDONE[service]
            if event.payload.get("fail_undo") == service:
                return Event(refused, {"reason": f"{service} cannot undo (scripted)"})
            state.pop("booked", None)
            return Event(confirmed)

        p.on(do, emits=(done, failed))(book)
        p.on(undo, emits=UNDONE[service])(cancel)
        out.append(p)
    return out


trip_choreography = build_trip_choreography()
