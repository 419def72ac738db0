"""Typed saga data: attrs classes and dataclasses in, JSON in the store, the instance back."""

from __future__ import annotations

import dataclasses
import enum
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from statesaga import (
    DataType,
    InvalidSagaData,
    Orchestrator,
    SagaDefinitionError,
    SagaStateMachine,
    SagaStatus,
    StepContext,
)
from statesaga.stores.urls import open_store
from statesaga.testing import explore_failures


class Cabin(enum.Enum):
    ECONOMY = "economy"
    BUSINESS = "business"


@attrs.frozen
class Flight:
    number: str
    departs: datetime
    cabin: Cabin = Cabin.ECONOMY


@attrs.frozen
class Booking:
    traveller: str
    amount: int
    outbound: Flight
    back: Flight | None = None
    tags: list[str] = attrs.field(factory=list)


@dataclasses.dataclass(frozen=True)
class Transfer:
    account: str
    amount: float
    at: datetime


BERLIN = timezone(timedelta(hours=1))
BOOKING = Booking(
    traveller="ada", amount=420,
    outbound=Flight("LH1", datetime(2025, 3, 1, 9, 30, tzinfo=BERLIN), Cabin.BUSINESS),
    back=Flight("LH2", datetime(2025, 3, 8, 18, 0, tzinfo=UTC)), tags=["vip"])
BOOKING_JSON = {
    "traveller": "ada", "amount": 420,
    "outbound": {"number": "LH1", "departs": "2025-03-01T09:30:00+01:00", "cabin": "business"},
    "back": {"number": "LH2", "departs": "2025-03-08T18:00:00+00:00", "cabin": "economy"},
    "tags": ["vip"]}


class Seen:
    """What the steps were given as `ctx.data`."""

    def __init__(self) -> None:
        self.data: list[Any] = []
        self.cancelled: set[str] = set()

    def machine(self, data: Any = Booking, declined: bool = True) -> SagaStateMachine:
        m = SagaStateMachine("trip", data=data)

        def book(ctx: StepContext) -> dict[str, str]:
            self.data.append(ctx.data)
            if ctx.idempotency_key in self.cancelled:  # a late call after its undo
                raise RuntimeError("refused: this booking was cancelled")
            return {"seat": "1A"}

        def cancel(ctx: StepContext) -> None:
            self.data.append(ctx.data)
            self.cancelled.add(ctx.idempotency_key)  # a tombstone

        def pay(ctx: StepContext) -> None:
            self.data.append(ctx.data)
            if declined:
                raise RuntimeError("card declined")

        m.step("book", book, compensation=cancel)
        m.step("pay", pay)
        return m


# -- through the real stores ------------------------------------------------------------------


async def test_typed_data_goes_through_the_store_as_json_and_comes_back_unchanged(
        store_url: str) -> None:
    seen = Seen()
    machine = seen.machine()
    writer = open_store(store_url)
    try:
        started = await Orchestrator(store=writer).start(machine, BOOKING, saga_id="b-1")
    finally:
        await writer.close()
    assert BOOKING_JSON == started.data

    reader = open_store(store_url)  # another connection: only what the store kept
    try:
        await Orchestrator(store=reader, sagas=[machine]).recover()
        record = await reader.load("b-1")
    finally:
        await reader.close()
    assert SagaStatus.COMPENSATED is record.status
    assert [BOOKING] * 3 == seen.data  # book, pay, cancel: the instance, equal to the one in
    assert all(type(d) is Booking for d in seen.data)
    assert BOOKING_JSON == record.data


async def test_a_dict_in_is_checked_and_steps_get_the_instance(store_url: str) -> None:
    seen = Seen()
    store = open_store(store_url)
    try:
        record = await Orchestrator(store=store).run(seen.machine(), BOOKING_JSON,
                                                     saga_id="b-2")
    finally:
        await store.close()
    assert (BOOKING_JSON, [BOOKING] * 3) == (record.data, seen.data)


async def test_a_wrong_field_is_refused_before_anything_is_written(store_url: str) -> None:
    seen = Seen()
    wrong = {**BOOKING_JSON, "amount": "420",
             "outbound": {"number": "LH1", "departs": "soon", "cabin": "first"}}
    store = open_store(store_url)
    try:
        with pytest.raises(InvalidSagaData) as raised:
            await Orchestrator(store=store).run(seen.machine(), wrong, saga_id="b-3")
        stored = await store.list()
    finally:
        await store.close()
    assert ([], []) == (stored, seen.data)
    assert ("data.amount", "b-3") == (raised.value.key, raised.value.saga_id)
    assert ("the data of saga 'b-3' does not fit Booking: data.amount: expected int, got str "
            "'420'; data.outbound.departs: expected a datetime as ISO 8601 text (Invalid "
            "isoformat string: 'soon'); data.outbound.cabin: expected one of 'economy', "
            "'business' (Cabin)") == str(raised.value)


# -- what is refused ----------------------------------------------------------------------------


@pytest.mark.parametrize(("data", "key", "why"), [
    ({"traveller": "ada", "amount": 1}, "data.outbound", "data.outbound: missing"),
    ({**BOOKING_JSON, "amout": 1}, "data", "data: unknown fields 'amout'"),
    ({**BOOKING_JSON, "amount": True}, "data.amount", "expected int, got bool True"),
    ({**BOOKING_JSON, "tags": ["a", 2]}, "data.tags[1]", "expected str, got int 2"),
    ({**BOOKING_JSON, "back": 7}, "data.back", "data.back: expected "),
    ({**BOOKING_JSON, "outbound": None}, "data.outbound", "expected Flight, got NoneType"),
    (["not", "a", "dict"], "data", "must be a Booking or a dict of its fields, not list"),
    (Booking("ada", "420", BOOKING.outbound), "data.amount",  # type: ignore[arg-type]
     "data.amount: expected int, got str '420'"),
])
async def test_data_that_does_not_fit_names_where_and_what_was_expected(
        data: Any, key: str, why: str) -> None:
    with pytest.raises(InvalidSagaData) as raised:
        await Orchestrator().run(Seen().machine(), data, saga_id="x")
    assert key == raised.value.key
    assert why in str(raised.value)


def test_data_must_be_an_attrs_class_or_a_dataclass() -> None:
    m = SagaStateMachine("wrong", data=dict)
    m.step("a", lambda ctx: None)
    with pytest.raises(SagaDefinitionError, match="data: typed data must be an attrs class or "
                                                  "a dataclass, not <class 'dict'>"):
        m.validate()


def test_stored_data_that_no_longer_fits_its_class_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidSagaData, match=r"data.outbound.number: missing"):
        DataType(Booking).load({**BOOKING_JSON, "outbound": {"departs": "2025-03-01"}})


# -- other kinds, the version, and machines without types ------------------------------------


async def test_a_dataclass_works_too() -> None:
    seen = Seen()
    transfer = Transfer("DE42", 12, datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC))
    record = await Orchestrator().run(seen.machine(Transfer), transfer, saga_id="t-1")
    assert {"account": "DE42", "amount": 12.0, "at": "2025-01-02T03:04:05+00:00"} == record.data
    assert [transfer] * 3 == seen.data


async def test_a_machine_without_data_keeps_dicts_and_its_version() -> None:
    seen = Seen()
    m = seen.machine(data=None)
    record = await Orchestrator().run(m, {"any": ["json", 1]}, saga_id="d-1")
    assert ({"any": ["json", 1]}, m.graph.version) == (record.data, m.version)
    assert [{"any": ["json", 1]}] * 3 == [dict(d) for d in seen.data]


def test_the_data_class_is_part_of_the_version() -> None:
    versions = {Seen().machine(data).version for data in (None, Booking, Transfer)}
    assert 3 == len(versions)
    assert Seen().machine(Booking).version == Seen().machine(DataType(Booking)).version


async def test_the_same_saga_id_with_the_same_instance_is_the_same_saga() -> None:
    orch, m = Orchestrator(), Seen().machine()
    first = await orch.run(m, BOOKING, saga_id="same")
    assert first == await orch.run(m, BOOKING_JSON, saga_id="same")


async def test_explore_failures_runs_a_typed_saga() -> None:
    seen = Seen()
    report = await explore_failures(seen.machine(declined=False), BOOKING)
    report.assert_ok()
    assert {type(d) for d in seen.data} == {Booking}


def test_importing_statesaga_does_not_import_cattrs() -> None:
    code = "import sys, statesaga; print('cattrs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert "False" == out
