"""The example sagas and two of their runs, drawn into `diagrams/` by `make diagrams`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import load_children, render

if TYPE_CHECKING:
    from ..definition import SagaStateMachine
    from ..records import SagaRecord

T = TypeVar("T")
# by file name: a machine, a saga of it (or None), and that saga's sub-sagas
Drawings = dict[str, tuple["SagaStateMachine", "SagaRecord | None", tuple["SagaRecord", ...]]]


class InstantClock:
    """A clock whose sleeps return at once: the stuck saga's retries take no real time."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds

    async def wait_for(self, aw: Awaitable[T], timeout: float) -> T:
        return await aw  # the example services answer at once, or fail at once

    async def run_sync(self, func: Callable[..., T], *args: Any) -> T:
        return func(*args)


async def example_drawings() -> Drawings:
    """The trip, payment, parallel trip and order sagas, a trip compensated after its
    payment failed, a payment stuck because the debit cannot be refunded, a parallel trip
    compensated after its hotel failed while the car was still being rented, and an order
    compensated after shipping failed, its payment sub-saga reverted: by file name, with
    fixed saga ids."""
    import structlog

    from ..examples.order import build_order, order_services
    from ..examples.parallel_trip import build_parallel_trip, parallel_trip_services
    from ..examples.payment import build_payment, payment_services
    from ..examples.trip import build_trip, trip_services
    from ..orchestrator import Orchestrator

    trip_fakes, payment_fakes = trip_services(), payment_services()
    trip_fakes.fail_at("charge_payment")
    payment_fakes.fail_at("update_inventory")
    payment_fakes.fail_compensation("debit_payment_account")
    parallel_fakes = parallel_trip_services()
    parallel_fakes.fail_at("book_hotel")
    failing_trip, failing_payment = build_trip(trip_fakes), build_payment(payment_fakes)
    failing_parallel = build_parallel_trip(parallel_fakes)
    order_fakes = order_services()
    order_fakes.fail_at("ship")
    failing_order = build_order(order_fakes)
    orchestrator = Orchestrator(clock=InstantClock())
    with structlog.testing.capture_logs():  # the failures are the point: keep them quiet
        compensated = await orchestrator.run(failing_trip, {"flight": "LH1", "hotel": "Adlon"},
                                             saga_id="trip-42")
        stuck = await orchestrator.run(failing_payment, {"amount": 25, "sku": "book-1"},
                                       saga_id="payment-7")
        undone = await orchestrator.run(failing_parallel, {"flight": "LH1", "hotel": "Adlon"},
                                        saga_id="trip-43")
        reverted = await orchestrator.run(failing_order, {"amount": 25, "sku": "book-1"},
                                          saga_id="order-9")
    children = tuple(await load_children(orchestrator.store, failing_order, reverted))
    return {"trip": (build_trip(), None, ()), "payment": (build_payment(), None, ()),
            "parallel-trip": (build_parallel_trip(), None, ()),
            "order": (build_order(), None, ()),
            "trip-compensated": (failing_trip, compensated, ()),
            "payment-stuck": (failing_payment, stuck, ()),
            "parallel-trip-compensated": (failing_parallel, undone, ()),
            "order-compensated": (failing_order, reverted, children)}


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m statesaga.diagrams OUTDIR`: draw the examples into OUTDIR, .dot and .svg."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m statesaga.diagrams OUTDIR   (`make diagrams` redraws "
              "diagrams/)", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.mkdir(parents=True, exist_ok=True)
    for stem, (machine, record, children) in asyncio.run(example_drawings()).items():
        for suffix in (".dot", ".svg"):
            print(render(machine, out / (stem + suffix), record, children=children))
    return 0
