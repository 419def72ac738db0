"""A saga's timeline, as `statesaga show` and the console print it: a group's branches
named, and a saga's sub-sagas and parent."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import structlog

from statesaga import Orchestrator, SagaRecord, SagaStore, SQLiteStore
from statesaga.cli import main
from statesaga.diagrams.examples import InstantClock
from statesaga.examples.order import build_order, order_services
from statesaga.examples.parallel_trip import build_parallel_trip, parallel_trip_services
from statesaga.examples.trip import build_trip
from statesaga.orchestrator_children import family
from statesaga.timeline import format_timeline


async def hotel_fails(store: SQLiteStore | None = None) -> SagaRecord:
    fakes = parallel_trip_services()
    fakes.fail_at("book_hotel")
    with structlog.testing.capture_logs():
        return await Orchestrator(store=store, clock=InstantClock()).run(
            build_parallel_trip(fakes), saga_id="trip-43")


def rows(text: str) -> list[list[str]]:
    return [line[1:].split() for line in text.splitlines()[2:-2]]


async def test_the_timeline_names_each_branch_beside_its_group() -> None:
    text = format_timeline(await hotel_fails(), times=False)
    moves = [r[:4] for r in rows(text)]
    assert ["book[book_flight]", "→", "book", "succeed"] in moves
    assert ["book[book_hotel]", "→", "compensating_book", "fail"] in moves
    undone = [m[0] for m in moves if m[0].startswith("compensating_book[")]
    assert {"compensating_book[book_flight]", "compensating_book[rent_car]"} == set(undone)
    assert ["hold_budget", "→", "book", "succeed"] in moves  # a step stays as it was


async def test_a_retried_branch_stays_in_its_branch() -> None:
    fakes = parallel_trip_services()
    fakes.fail_at("book_flight", times=1)
    record = await Orchestrator(clock=InstantClock()).run(build_parallel_trip(fakes),
                                                          saga_id="t-2")
    text = format_timeline(record, times=False)
    retry = next(line.split() for line in text.splitlines() if line.startswith("↻"))
    assert ["↻", "book[book_flight]", "→", "book[book_flight]", "retry"] == retry[:5]


async def test_a_saga_without_groups_reads_as_before() -> None:
    record = await Orchestrator(clock=InstantClock()).run(build_trip(), saga_id="t-1")
    assert "[" not in format_timeline(record)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'sagas.db'}"


def test_statesaga_show_names_the_branches_and_draws_the_group(
        capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path) -> None:
    async def seed() -> None:
        store = SQLiteStore(store_url.removeprefix("sqlite:///"))
        try:
            await hotel_fails(store)
        finally:
            await store.close()

    asyncio.run(seed())
    drawing = tmp_path / "trip-43.dot"
    code = main(["--store", store_url, "show", "trip-43", "--saga",
                 "statesaga.examples.parallel_trip:parallel_trip", "--diagram", str(drawing)])
    out = capsys.readouterr().out
    assert 0 == code
    assert "book[book_hotel]" in out
    assert "compensating_book[book_flight]" in out
    assert "subgraph cluster_book {" in drawing.read_text()


# -- sub-sagas ------------------------------------------------------------------------------


async def order_shipping_fails(store: SagaStore | None = None
                               ) -> tuple[SagaRecord, list[SagaRecord]]:
    orders = order_services()
    orders.fail_at("ship")
    orch = Orchestrator(store=store, clock=InstantClock())
    with structlog.testing.capture_logs():
        record = await orch.run(build_order(orders), {"amount": 25, "sku": "book"},
                                saga_id="order-9")
    return record, [await orch.store.load("order-9/pay")]


async def test_the_timeline_names_the_sub_saga_its_step_runs_and_how_it_ended() -> None:
    record, children = await order_shipping_fails()
    text = format_timeline(record, times=False, children=children)
    entered = next(line for line in text.splitlines() if "reserve_stock  " in line
                   and "→ pay " in line)
    assert entered.endswith("runs sub-saga 'order-9/pay'")
    undone = next(line for line in text.splitlines()
                  if line.startswith("↩") and "compensating_pay  " in line.split("→")[0])
    assert undone.endswith("sub-saga 'order-9/pay' reverted")
    assert text.splitlines()[-2:] == [
        "sub-sagas:",
        f"  pay: 'order-9/pay' (payment {children[0].version}) COMPENSATED in compensated"]


async def test_a_sub_sagas_timeline_names_its_parent_and_its_revert() -> None:
    record, children = await order_shipping_fails()
    text = format_timeline(children[0], times=False, parent=record)
    assert "completed" in text
    assert "revert" in text
    assert text.endswith("sub-saga of 'order-9' (order), its step pay: COMPENSATED in "
                         "compensated")


async def test_family_reads_a_sagas_parent_and_children_by_id_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    try:
        record, children = await order_shipping_fails(store)
        assert (None, ["order-9/pay"]) == (
            lambda f: (f[0], [c.saga_id for c in f[1]]))(await family(store, record))
        parent, grandchildren = await family(store, children[0])
        assert ("order-9", []) == (parent.saga_id if parent else None, grandchildren)
    finally:
        await store.close()


def test_statesaga_show_names_the_children_and_draws_them_inside_their_step(
        capsys: pytest.CaptureFixture[str], store_url: str, tmp_path: Path) -> None:
    async def seed() -> None:
        store = SQLiteStore(store_url.removeprefix("sqlite:///"))
        try:
            await order_shipping_fails(store)
        finally:
            await store.close()

    asyncio.run(seed())
    drawing = tmp_path / "order-9.dot"
    code = main(["--store", store_url, "show", "order-9", "--saga", "order_sagas:order",
                 "--diagram", str(drawing)])
    out = capsys.readouterr().out
    assert 0 == code
    assert "runs sub-saga 'order-9/pay'" in out
    assert "  pay: 'order-9/pay' (payment " in out
    dot = drawing.read_text()
    assert 'label="order-9/pay: compensated"' in dot
    code = main(["--store", store_url, "show", "order-9/pay", "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert (0, "order-9", []) == (code, shown["parent"], shown["children"])
