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

Each command carries the saga's fence. A participant drops, without a reply, a command
with a lower fence than it has seen for the saga (sent by a worker that lost the saga to
another), and an undo leaves a tombstone: a booking command arriving after its cancel is
dropped too, so a late delivery never books what was already undone. (A reply to a stale
command could only mislead the saga, which waits for the reply to its current one.)
"""

from __future__ import annotations

from typing import Any

from ..choreography import command
from ..context import StepContext
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


def fenced(ctx: StepContext) -> dict[str, Any]:
    """A command's payload: the saga's data and its fence, for the participant to check."""
    return {**ctx.data, "fence": ctx.fence}


def stale(event: Event, state: dict[str, Any], *, undo: bool = False) -> bool:
    """True if `event` comes too late: a lower fence than seen for this saga, or a booking
    after its undo (the tombstone). Otherwise the participant remembers its fence."""
    fence = event.payload.get("fence", 0)
    if fence < state.get("fence", 0) or (state.get("undone") and not undo):
        return True
    state["fence"] = fence
    return False


def build_trip_choreography(*, timeout: float = 30.0) -> SagaStateMachine:
    """The saga's machine: each state sends its command and waits for the reply."""
    m = SagaStateMachine("trip_choreography")
    for service, do, _, _, undo in SERVICES:
        confirmed, refused = UNDONE[service]
        m.add_state(STATES[service], on_enter=command(do, fenced), timeout=timeout,
                    compensation=command(undo, fenced, confirmed_by=confirmed,
                                         failed_by=refused))
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
                 done: str = done, failed: str = failed) -> Event | None:
            if stale(event, state):
                return None  # dropped: the saga waits for the reply to its current command
            if event.payload.get("fail_at") == service:
                return Event(failed, {"reason": f"{service} refused (scripted)"})
            state["booked"] = True
            return Event(done, {service: "ok"})

        def cancel(event: Event, state: dict[str, Any], service: str = service
                   ) -> Event | None:
            confirmed, refused = UNDONE[service]
            if stale(event, state, undo=True):
                return None
            if event.payload.get("fail_undo") == service:
                return Event(refused, {"reason": f"{service} cannot undo (scripted)"})
            state.pop("booked", None)
            state["undone"] = True  # the tombstone: a late booking command is refused
            return Event(confirmed)

        p.on(do, emits=(done, failed))(book)
        p.on(undo, emits=UNDONE[service])(cancel)
        out.append(p)
    return out


trip_choreography = build_trip_choreography()
