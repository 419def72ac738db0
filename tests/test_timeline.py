"""A saga's timeline, as `statesaga show` and the console print it: a group's branches named."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import structlog

from statesaga import Orchestrator, SagaRecord, SQLiteStore
from statesaga.cli import main
from statesaga.diagrams.examples import InstantClock
from statesaga.examples.parallel_trip import build_parallel_trip, parallel_trip_services
from statesaga.examples.trip import build_trip
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
