"""Tests of statesaga.diagrams: the committed drawings, their layout, a saga drawn on them."""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from statesaga import Retry, SagaError, SagaRecord, SagaStateMachine, SagaStatus
from statesaga.diagrams import Diagram, mimebundle, render, to_dot, to_mermaid
from statesaga.diagrams.examples import InstantClock, example_drawings, main
from statesaga.diagrams.model import TIMES
from statesaga.examples.payment import build_payment, payment_services
from statesaga.examples.trip import build_trip
from statesaga.graph import _reach
from statesaga.orchestrator import Orchestrator

DIAGRAMS = Path(__file__).resolve().parent.parent / "diagrams"
# CI (STATESAGA_REQUIRE_SERVICES=1) must draw for real: there a missing dot fails the tests.
needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None and os.environ.get("STATESAGA_REQUIRE_SERVICES") != "1",
    reason="graphviz's dot is not installed: `make system` or apt-get install graphviz")
Drawings = dict[str, tuple[SagaStateMachine, SagaRecord | None, tuple[SagaRecord, ...]]]


@pytest.fixture(scope="module")
def drawings() -> Drawings:
    return asyncio.run(example_drawings())


@pytest.fixture
def no_dot(monkeypatch: pytest.MonkeyPatch) -> None:
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if name == "dot" else real(name))


# -- helpers: read DOT back, and ask dot for the layout ----------------------------------

_EDGE = re.compile(r'^\s*("[^"]*"|\S+) -> ("[^"]*"|\S+) \[(.*)\]$')
_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|<.*?>(?= \w+=|$)|\S+)')


def _name(token: str) -> str:
    return token[1:-1] if token.startswith('"') else token


def edges(dot: str) -> list[tuple[str, str, dict[str, str]]]:
    """Every drawn (tail, head, attributes) of a DOT source, legend and layout aids left out."""
    out = []
    for line in dot.splitlines():
        match = _EDGE.match(line)
        if match:
            attrs_ = {k: _name(v) for k, v in _ATTR.findall(match.group(3))}
            if "class" in attrs_:
                out.append((_name(match.group(1)), _name(match.group(2)), attrs_))
    return out


def of_class(dot: str, word: str) -> set[tuple[str, str]]:
    return {(a, b) for a, b, at in edges(dot) if word in at["class"].split()}


def layout(dot: str) -> tuple[tuple[float, float, float], dict[str, tuple[float, float]]]:
    """dot's layout: (scale, width, height) of the drawing, and each node's centre."""
    plain = subprocess.run(["dot", "-Tplain"], input=dot, capture_output=True, text=True,
                           check=True).stdout
    lines = plain.splitlines()
    scale, width, height = map(float, lines[0].split()[1:4])
    nodes = {}
    for line in lines:
        match = re.match(r'node ("[^"]*"|\S+) (\S+) (\S+)', line)
        if match:
            nodes[_name(match.group(1))] = (float(match.group(2)), float(match.group(3)))
    return (scale, width, height), nodes


def forward_reach(dot: str, start: str) -> set[str]:
    succ: dict[str, set[str]] = {}
    for a, b in of_class(dot, "forward") | of_class(dot, "start"):
        succ.setdefault(a, set()).add(b)
    return _reach(start, succ)  # the edges read from the drawing, not from the machine


# -- machines beyond the examples --------------------------------------------------------


async def _noop(ctx: Any) -> None:
    return None


def long_saga(n: int = 20) -> SagaStateMachine:
    """n steps, every fourth without a compensation, every fifth retried."""
    m = SagaStateMachine("long")
    for i in range(n):
        m.step(f"step_{i:02d}", _noop, compensation=_noop if i % 4 != 3 else None,
               retry=Retry(attempts=3) if i % 5 == 0 else None)
    return m


def order_saga() -> SagaStateMachine:
    """An explicit graph with a branch that rejoins, and user failure events."""
    m = SagaStateMachine("order")
    m.add_state("reserve_stock", compensation=_noop)
    m.add_state("check_credit")
    m.add_state("approve", compensation=_noop)
    m.add_state("manual_review")
    m.add_state("ship", compensation=_noop)
    m.add_transition("reserve_stock", "check_credit", "stock_reserved")
    m.add_transition("check_credit", "approve", "credit_ok")
    m.add_transition("check_credit", "manual_review", "credit_flagged")
    m.add_transition("check_credit", "compensated", "credit_refused")
    m.add_transition("manual_review", "approve", "reviewer_approved")
    m.add_transition("manual_review", "compensated", "reviewer_rejected")
    m.add_transition("approve", "ship", "approved")
    m.add_transition("ship", "completed", "delivered")
    return m


def diamond_saga() -> SagaStateMachine:
    """Two branches that rejoin, with no edge between them."""
    m = SagaStateMachine("diamond")
    for state in ("quote", "by_rail", "by_road", "book"):
        m.add_state(state, compensation=_noop)
    m.add_transition("quote", "by_rail", "rail_cheaper")
    m.add_transition("quote", "by_road", "road_cheaper")
    m.add_transition("by_rail", "book", "reserved")
    m.add_transition("by_road", "book", "reserved")
    m.add_transition("book", "completed", "booked")
    return m


def machines(drawings: Drawings) -> Iterator[tuple[str, SagaStateMachine]]:
    yield "trip", drawings["trip"][0]
    yield "payment", drawings["payment"][0]
    yield "long", long_saga()
    yield "order", order_saga()
    yield "diamond", diamond_saga()


# -- the committed diagrams --------------------------------------------------------------


def stale(folder: Path, fresh: dict[str, str]) -> list[str]:
    """Diagrams in `folder` that differ from `fresh`, are missing (.dot or .svg), or linger."""
    committed = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.dot")}
    names = fresh.keys() | committed.keys()
    wrong = [n for n in names if committed.get(n) != fresh.get(n)]
    wrong += [n[:-4] + ".svg" for n in fresh if not (folder / (n[:-4] + ".svg")).is_file()]
    return sorted(wrong)


def fresh_dots(drawings: Drawings) -> dict[str, str]:
    return {f"{stem}.dot": to_dot(m, r, children=c) for stem, (m, r, c) in drawings.items()}


def test_the_committed_diagrams_are_those_of_the_examples_today(drawings: Drawings) -> None:
    wrong = stale(DIAGRAMS, fresh_dots(drawings))
    assert [] == wrong, (f"stale diagrams in {DIAGRAMS}: {', '.join(wrong)}; the sagas or the "
                         "drawing changed: run `make diagrams` and commit diagrams/")


def test_a_stale_missing_or_leftover_diagram_is_caught(drawings: Drawings,
                                                       tmp_path: Path) -> None:
    fresh = fresh_dots(drawings)
    for name, source in fresh.items():
        (tmp_path / name).write_text(source, encoding="utf-8")
        (tmp_path / name.replace(".dot", ".svg")).write_text("<svg/>", encoding="utf-8")
    assert [] == stale(tmp_path, fresh)
    (tmp_path / "trip.dot").write_text(fresh["trip.dot"].replace("book_hotel", "book_room"))
    (tmp_path / "payment.svg").unlink()
    (tmp_path / "old.dot").write_text("digraph old {}")
    assert ["old.dot", "payment.svg", "trip.dot"] == stale(tmp_path, fresh)


def test_drawing_a_saga_is_the_same_whatever_its_times(drawings: Drawings) -> None:
    machine, record, _ = drawings["payment-stuck"]
    assert record is not None
    later = attrs.evolve(record, history=tuple(
        attrs.evolve(t, at=t.at + timedelta(days=3), duration=None if t.duration is None
                     else t.duration + 1.5) for t in record.history),
        created_at=datetime(2001, 1, 1, tzinfo=UTC), updated_at=datetime(2001, 1, 2, tzinfo=UTC))
    dot = to_dot(machine, record)
    assert dot == to_dot(machine, later)
    assert re.search(r"\d{4}-\d\d-\d\d|\d\d:\d\d:\d\d", dot) is None


def test_main_draws_dot_and_svg_of_every_example(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert 0 == main([str(tmp_path / "out")])
    stems = ["order", "order-compensated", "parallel-trip", "parallel-trip-compensated",
             "payment", "payment-stuck", "trip", "trip-compensated"]
    assert sorted(f"{s}{x}" for s in stems for x in (".dot", ".svg")) == sorted(
        p.name for p in (tmp_path / "out").iterdir())
    assert 16 == len(capsys.readouterr().out.splitlines())


def test_python_m_statesaga_diagrams_without_a_folder_says_how_to_call_it(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "argv", ["python -m statesaga.diagrams"])
    monkeypatch.delitem(sys.modules, "statesaga.diagrams.__main__", raising=False)
    with pytest.raises(SystemExit) as exit_:
        importlib.import_module("statesaga.diagrams.__main__")  # what `python -m` runs
    assert 2 == exit_.value.code
    assert "usage: python -m statesaga.diagrams OUTDIR" in capsys.readouterr().err


@needs_dot
def test_python_m_statesaga_diagrams_redraws_the_committed_diagrams(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "statesaga.diagrams", str(tmp_path)], check=True,
                   capture_output=True)
    for dot in DIAGRAMS.glob("*.dot"):
        assert dot.read_text(encoding="utf-8") == (tmp_path / dot.name).read_text(
            encoding="utf-8"), f"{dot.name} is stale: run `make diagrams`"


# -- the layout --------------------------------------------------------------------------


@needs_dot
def test_every_compensation_state_is_level_with_its_step_and_beside_it(
        drawings: Drawings) -> None:
    for name, machine in machines(drawings):
        _, at = layout(to_dot(machine))
        for state in machine.graph.forward:
            if machine.graph.compensable(state):
                (x, y), (mx, my) = at[state], at["compensating_" + state]
                assert (name, state, y) == (name, state, my)
                assert mx > x, (name, state)


@needs_dot
def test_compensated_tops_the_undo_column_and_completed_ends_the_steps(
        drawings: Drawings) -> None:
    for name, machine in machines(drawings):
        _, at = layout(to_dot(machine))
        graph = machine.graph
        mirrors = [s for s in graph.states if s.startswith("compensating_")]
        forward_ys = [at[s][1] for s in graph.forward]
        assert all(at["compensated"][1] > at[m][1] for m in mirrors), name
        assert at["completed"][1] < min(forward_ys), name
        assert at["failed"][1] < min(at[m][1] for m in mirrors), name
        assert len(graph.forward) == len(set(forward_ys)), name  # one rank each
        assert 1 == len({round(at[s][0], 1) for s in graph.forward}), name  # one column
        dot = to_dot(machine)
        assert all(at[a][1] > at[b][1] for a, b in of_class(dot, "forward")), name  # down


@needs_dot
def test_a_20_step_saga_fits_a_page() -> None:
    (scale, width, height), _ = layout(to_dot(long_saga(20)))
    assert scale * width <= 7.5 + 0.01
    assert scale * height <= 10 + 0.01
    assert scale > 0.45  # and is not a thumbnail


def test_every_compensation_edge_walks_back_along_a_forward_path(drawings: Drawings) -> None:
    for name, machine in machines(drawings):
        dot = to_dot(machine)
        mirror_edges = of_class(dot, "mirror")
        assert mirror_edges, name
        for tail, head in mirror_edges:  # compensating_B -> compensating_A: B undone, to A
            undone = tail.removeprefix("compensating_")
            back_to = "~start" if head == "compensated" else head.removeprefix("compensating_")
            assert undone in forward_reach(dot, back_to), (name, tail, head)
            assert undone != back_to


def test_kinds_of_edge_differ_by_line_style_not_only_by_colour() -> None:
    dot = to_dot(build_trip())
    looks = {}
    for _, _, at in edges(dot):
        kind = at["class"]
        look = (at.get("style"), at.get("arrowhead"), at.get("dir"),
                at.get("color", "").count(":"))
        looks.setdefault(kind, set()).add(look)
    assert {"start", "forward", "failure", "unknown", "mirror", "stuck"} == set(looks)
    forward, *others = [looks[k] for k in ("forward", "failure", "unknown", "mirror")]
    for other in others:
        assert not forward & other
    assert len({frozenset(v) for v in (looks["failure"], looks["unknown"],
                                       looks["mirror"], looks["stuck"])}) == 4


def test_retry_self_loops_are_left_out_and_said_on_the_state() -> None:
    dot = to_dot(build_trip())
    assert [] == [(a, b) for a, b, _ in edges(dot) if a == b]
    assert re.search(r'book_flight \[label=<book_flight<BR/><FONT[^>]*>up to 3 tries</FONT>'
                     r'<BR/><FONT[^>]*>timeout 5s</FONT>>', dot)
    assert re.search(r"book_hotel \[group=forward tooltip=book_hotel\]", dot)  # 1 attempt
    assert ">up to 5 tries<" in dot.split("\tcompensating_book_hotel [", 1)[1].split("\n")[0]


def test_a_branch_keeps_the_forward_column_in_order() -> None:
    dot = to_dot(diamond_saga())
    invisible = set(re.findall(r"\t(\w+) -> (\w+) \[style=invis weight=10\]", dot))
    assert {("by_rail", "by_road")} == invisible  # siblings: nothing else orders them
    forward = of_class(dot, "forward")
    assert {("quote", "by_rail"), ("quote", "by_road"), ("by_rail", "book"),
            ("by_road", "book"), ("book", "completed")} == forward


def late_saga() -> SagaStateMachine:
    """States defined in another order than they run in."""
    m = SagaStateMachine("late")
    m.add_state("first", compensation=_noop)
    m.add_state("last", compensation=_noop)
    m.add_state("middle", compensation=_noop)
    m.add_transition("first", "middle", "go")
    m.add_transition("middle", "last", "go")
    m.add_transition("last", "completed", "done")
    return m


@needs_dot
def test_states_defined_out_of_order_are_drawn_in_the_order_they_run() -> None:
    _, at = layout(to_dot(late_saga()))
    assert ["first", "middle", "last"] == sorted(["first", "last", "middle"],
                                                 key=lambda s: -at[s][1])


def test_the_stuck_rail_runs_down_the_compensations_in_the_order_drawn() -> None:
    rail = "~rail~compensating_"
    assert {(rail + "first", rail + "middle"), (rail + "middle", rail + "last"),
            (rail + "last", "failed"), ("compensating_first", rail + "first"),
            ("compensating_middle", rail + "middle"), ("compensating_last", rail + "last")
            } == of_class(to_dot(late_saga()), "stuck")


def test_a_machine_with_nothing_to_undo_has_no_failed_state_nor_rail() -> None:
    m = SagaStateMachine("notify")
    m.step("send", _noop)
    dot = to_dot(m)
    assert "failed" not in {n for a, b, _ in edges(dot) for n in (a, b)}
    assert "~rail" not in dot
    assert "\tfailed [" not in dot


# -- a saga drawn on its machine ---------------------------------------------------------


def test_a_compensated_saga_draws_exactly_the_edges_it_took_bold(drawings: Drawings) -> None:
    machine, record, _ = drawings["trip-compensated"]
    dot = to_dot(machine, record)
    bold = {(a, b) for a, b, at in edges(dot) if at.get("penwidth") == "3"}
    assert {("~start", "book_flight"), ("book_flight", "book_hotel"),
            ("book_hotel", "charge_payment"), ("charge_payment", "compensating_book_hotel"),
            ("compensating_book_hotel", "compensating_book_flight"),
            ("compensating_book_flight", "compensated")} == bold
    assert bold == of_class(dot, "taken")
    assert set() == of_class(dot, "would")  # compensated: nothing is left to undo


def test_the_current_state_is_marked_and_failed_attempts_counted(drawings: Drawings) -> None:
    machine, record, _ = drawings["trip-compensated"]
    dot = to_dot(machine, record)
    assert re.search(r"\tcompensated \[[^\n]*peripheries=2", dot)
    assert 1 == dot.count("peripheries=2")
    assert re.search(r"charge_payment \[label=<charge_payment<BR/><FONT POINT-SIZE=\"9\" "
                     rf"COLOR=\"#b3261e\">failed 1{TIMES}</FONT><BR/><FONT[^>]*>ServiceError: "
                     r"payments.charge</FONT>", dot)
    assert "tooltip=\"charge_payment: step 'charge_payment' failed on attempt 1" in dot
    assert "trip-42: compensated" in dot.split("\n")[1]


def test_a_stuck_saga_shows_where_it_stopped_and_what_a_retry_would_undo(
        drawings: Drawings) -> None:
    machine, record, _ = drawings["payment-stuck"]
    dot = to_dot(machine, record)
    rail = "~rail~compensating_"
    assert {("~start", "debit_payment_account"),
            ("debit_payment_account", "credit_merchant_account"),
            ("credit_merchant_account", "update_inventory"),
            ("update_inventory", "compensating_credit_merchant_account"),
            ("compensating_credit_merchant_account", "compensating_debit_payment_account"),
            ("compensating_debit_payment_account", rail + "debit_payment_account"),
            (rail + "debit_payment_account", rail + "credit_merchant_account"),
            (rail + "credit_merchant_account", rail + "update_inventory"),
            (rail + "update_inventory", "failed")} == of_class(dot, "taken")
    assert of_class(dot, "taken") == {(a, b) for a, b, at in edges(dot)
                                      if at.get("penwidth") == "3"}
    assert {("compensating_debit_payment_account", "compensated"),
            ("compensating_debit_payment_account", rail + "debit_payment_account"),
            (rail + "debit_payment_account", rail + "credit_merchant_account"),
            (rail + "credit_merchant_account", rail + "update_inventory"),
            (rail + "update_inventory", "failed")} == of_class(dot, "would")
    stuck = dot.split("\tcompensating_debit_payment_account [", 1)[1].split("\n")[0]
    assert f"stuck here: failed 5{TIMES}" in stuck
    assert "ServiceError: accounts.refund" in stuck
    assert "color=\"#b3261e\"" in stuck
    assert "would undo on retry" in dot
    assert f"failed 2{TIMES}" in dot.split("\tupdate_inventory [", 1)[1].split("\n")[0]


def _midway(record: SagaRecord, upto: int, status: SagaStatus) -> SagaRecord:
    history = record.history[:upto]
    return attrs.evolve(record, history=history, state=history[-1].dest, status=status,
                        error=None)


def test_a_running_saga_shows_the_compensation_that_would_run_if_it_failed_now(
        drawings: Drawings) -> None:
    machine, record, _ = drawings["trip-compensated"]
    assert record is not None
    running = _midway(record, 3, SagaStatus.RUNNING)  # in charge_payment
    dot = to_dot(machine, running)
    assert {("charge_payment", "compensating_book_hotel"),
            ("compensating_book_hotel", "compensating_book_flight"),
            ("compensating_book_flight", "compensated")} == of_class(dot, "would")
    assert all("dashed" in at["style"] and "#c2185b" in at["color"]
               for _, _, at in edges(dot) if "would" in at["class"].split())
    assert "would undo if it failed now" in dot
    assert re.search(r"\tcharge_payment \[[^\n]*peripheries=2", dot)


def test_a_compensating_saga_shows_what_is_still_to_undo(drawings: Drawings) -> None:
    machine, record, _ = drawings["trip-compensated"]
    assert record is not None
    undoing = _midway(record, 5, SagaStatus.COMPENSATING)  # in compensating_book_flight
    dot = to_dot(machine, undoing)
    assert {("compensating_book_flight", "compensated")} == of_class(dot, "would")
    assert "still to undo" in dot


async def test_a_retried_stuck_saga_is_no_longer_marked_stuck() -> None:
    fakes = payment_services()
    fakes.fail_at("update_inventory")
    fakes.fail_compensation("debit_payment_account")
    machine = build_payment(fakes)
    orchestrator = Orchestrator(clock=InstantClock())
    await orchestrator.run(machine, saga_id="p-1")
    fakes.fail_compensation("debit_payment_account", times=0)
    record = await orchestrator.retry("p-1")
    assert SagaStatus.COMPENSATED == record.status
    dot = to_dot(machine, record)
    assert "stuck here" not in dot
    assert f"failed 5{TIMES}" in dot.split("\tcompensating_debit_payment_account [", 1)[1]
    assert ("compensating_debit_payment_account",
            "~rail~compensating_debit_payment_account") in of_class(dot, "taken")


async def test_a_completed_saga_has_nothing_left_to_undo() -> None:
    machine = build_trip()
    record = await Orchestrator(clock=InstantClock()).run(machine, saga_id="t-ok")
    dot = to_dot(machine, record)
    assert set() == of_class(dot, "would")
    assert ("send_notification", "completed") in of_class(dot, "taken")
    assert "would undo" not in dot


@needs_dot
async def test_a_saga_with_backslashes_and_quotes_in_its_error_still_draws(
        tmp_path: Path) -> None:
    async def fails(ctx: Any) -> None:
        raise OSError('disk "C:\\temp\\" is full \\')

    m = SagaStateMachine("odd")
    m.step("write", fails, compensation=_noop)
    record = await Orchestrator(clock=InstantClock()).run(m, saga_id='odd\\"id\\')
    svg = render(m, tmp_path / "odd.svg", record).read_text(encoding="utf-8")
    assert "disk &quot;C:\\temp\\&quot; is full \\" in svg
    assert "odd\\&quot;id\\: compensated" in svg


def test_a_record_of_another_machine_is_refused_naming_both(drawings: Drawings) -> None:
    _, record, _ = drawings["trip-compensated"]
    assert record is not None
    with pytest.raises(SagaError) as error:
        to_dot(build_payment(), record)
    assert (f"saga 'trip-42' ran under 'trip' version {record.version}, not 'payment' "
            f"version {build_payment().version}: draw it with the machine it ran under"
            ) == str(error.value)
    other = SagaStateMachine("trip")
    other.step("book_flight", _noop)
    with pytest.raises(SagaError, match=f"not 'trip' version {other.version}"):
        render(other, "unused.dot", record)


# -- files, Jupyter, Mermaid -------------------------------------------------------------


@needs_dot
@pytest.mark.parametrize(("suffix", "magic"), [(".svg", b"<?xml"), (".png", b"\x89PNG\r\n\x1a\n"),
                                               (".pdf", b"%PDF-"), (".PNG", b"\x89PNG")])
def test_render_draws_through_dot_in_the_format_of_the_suffix(
        drawings: Drawings, tmp_path: Path, suffix: str, magic: bytes) -> None:
    machine, record, _ = drawings["payment-stuck"]
    path = render(machine, tmp_path / f"stuck{suffix}", record)
    assert tmp_path / f"stuck{suffix}" == path
    assert magic == path.read_bytes()[: len(magic)]


@pytest.mark.usefixtures("no_dot")
def test_render_to_dot_needs_no_graphviz_program(tmp_path: Path) -> None:
    path = render(build_trip(), str(tmp_path / "trip.dot"))
    assert to_dot(build_trip()) == path.read_text(encoding="utf-8")


@pytest.mark.usefixtures("no_dot")
@pytest.mark.parametrize("suffix", [".svg", ".png", ".pdf"])
def test_render_without_dot_says_how_to_install_it(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(SagaError, match=r"needs graphviz's `dot` program, which is not "
                                        r"installed: install graphviz \(`apt-get install "
                                        r"graphviz`"):
        render(build_trip(), tmp_path / f"trip{suffix}")
    assert [] == list(tmp_path.iterdir())


def test_render_to_an_unknown_suffix_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(SagaError) as error:
        render(build_trip(), tmp_path / "trip.jpeg")
    assert (f"cannot draw to {str(tmp_path / 'trip.jpeg')!r}: unknown suffix '.jpeg'; use one "
            "of .dot, .pdf, .png, .svg") == str(error.value)


def test_render_into_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    with pytest.raises(SagaError) as error:
        render(build_trip(), tmp_path / "nope" / "trip.svg")
    assert (f"the folder {str(tmp_path / 'nope')!r} does not exist; create it first"
            in str(error.value))


@needs_dot
def test_jupyter_shows_a_machine_as_svg() -> None:
    machine = build_trip()
    bundle = machine._repr_mimebundle_()
    assert ["image/svg+xml", "text/plain"] == sorted(bundle)
    assert bundle["image/svg+xml"].startswith("<?xml")
    assert "compensating_book_flight" in bundle["image/svg+xml"]
    assert repr(machine) == bundle["text/plain"]


@needs_dot
def test_jupyter_shows_a_saga_on_its_machine(drawings: Drawings) -> None:
    machine, record, _ = drawings["trip-compensated"]
    bundle = mimebundle(machine, record)
    assert "<saga 'trip-42' in compensated>" == bundle["text/plain"]
    assert "taken by this saga" in bundle["image/svg+xml"]


@needs_dot
def test_a_diagram_of_a_saga_shows_itself_in_jupyter_and_draws_to_files(
        drawings: Drawings, tmp_path: Path) -> None:
    machine, record, _ = drawings["payment-stuck"]
    diagram = Diagram(machine, record)
    assert mimebundle(machine, record) == diagram._repr_mimebundle_()
    assert to_dot(machine, record) == diagram.to_dot()
    assert to_mermaid(machine, record) == diagram.to_mermaid()
    assert to_dot(machine, record) == diagram.render(tmp_path / "stuck.dot").read_text()
    assert to_dot(machine) == Diagram(machine).to_dot()


def test_a_diagram_refuses_a_saga_of_another_machine_when_it_is_made(
        drawings: Drawings) -> None:
    _, record, _ = drawings["payment-stuck"]
    with pytest.raises(SagaError, match="saga 'payment-7' ran under 'payment' version"):
        Diagram(build_trip(), record)


@pytest.mark.usefixtures("no_dot")
def test_jupyter_without_dot_shows_the_dot_source() -> None:
    machine = build_trip()
    bundle = machine._repr_mimebundle_()
    assert ["text/plain"] == list(bundle)
    assert bundle["text/plain"].startswith("// install graphviz (apt-get install graphviz)")
    assert bundle["text/plain"].endswith(to_dot(machine))


def test_mermaid_has_every_state_and_every_edge(drawings: Drawings) -> None:
    machine = drawings["trip"][0]
    text = to_mermaid(machine)
    assert text.startswith("stateDiagram-v2\n")
    arrows = set(re.findall(r"^    (\S+) --> (\S+)", text, re.M))
    for state in machine.states:
        assert state in {n for pair in arrows for n in pair}
    expected = {(t.source, t.dest) for t in machine.transitions if t.source != t.dest}
    assert expected | {("[*]", "book_flight"), ("completed", "[*]"),
                       ("compensated", "[*]")} == arrows
    assert "    book_flight --> compensating_book_flight : timeout / abort" in text
    assert "    book_flight : up to 3 tries · timeout 5s" in text


def test_mermaid_marks_a_stuck_saga(drawings: Drawings) -> None:
    machine, record, _ = drawings["payment-stuck"]
    text = to_mermaid(machine, record)
    assert "    class failed current" in text
    assert "    class compensating_debit_payment_account stuck" in text
    assert "    class update_inventory visited" in text
    assert "class compensating_update_inventory" not in text
    assert "    update_inventory : update_inventory\n" in text  # or the notes replace its name
    assert (f"    update_inventory : up to 2 tries · failed 2{TIMES} · ServiceError\u2236"
            in text)  # a colon would end Mermaid's parse of the note


def test_mermaid_marks_where_a_compensated_saga_ended(drawings: Drawings) -> None:
    machine, record, _ = drawings["trip-compensated"]
    text = to_mermaid(machine, record)
    assert "    class compensated current" in text
    assert " stuck" not in text.split("classDef stuck", 1)[1]
    assert "    class charge_payment visited" in text


def test_mermaid_gives_awkward_state_names_an_identifier() -> None:
    m = SagaStateMachine("names")
    m.step("check.credit", _noop, compensation=_noop)
    m.step("check-credit", _noop)
    text = to_mermaid(m)
    assert '    state "check.credit" as check_credit' in text
    assert '    state "check-credit" as check_credit_' in text
    assert '    state "compensating_check.credit" as compensating_check_credit' in text
    assert "    check_credit --> check_credit_ : succeed" in text


# -- staying out of the way --------------------------------------------------------------


def test_importing_statesaga_does_not_import_graphviz() -> None:
    code = ("import sys, statesaga, statesaga.diagrams, statesaga.orchestrator; "
            "from statesaga.examples.trip import trip; trip.validate(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'graphviz'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "[]\n" == out


async def test_running_a_saga_never_draws_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import statesaga.diagrams.dot as dot_module

    def refuse(*args: Any) -> None:
        raise AssertionError("a running saga drew a diagram")

    monkeypatch.setattr(dot_module, "digraph", refuse)
    record = await Orchestrator(clock=InstantClock()).run(build_trip(), saga_id="t-1")
    assert SagaStatus.COMPLETED == record.status


@needs_dot
async def test_a_record_shows_its_path_on_its_machine_in_jupyter() -> None:
    record = await Orchestrator().run(build_trip(), saga_id="shown")
    bundle = record._repr_mimebundle_()
    assert "saga 'shown'" in bundle["text/plain"]
    assert bundle["image/svg+xml"].lstrip().startswith(("<?xml", "<svg"))
    unknown = attrs.evolve(record, version="0" * 12)._repr_mimebundle_()
    assert ["text/plain"] == list(unknown)
