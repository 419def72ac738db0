"""What a drawing says in words: edge labels that never collide, the legend, the policies.

Collisions are measured on dot's own layout (`dot -Tjson`): every label's box against
every other label, every state, and every line.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from typing import Any

import pytest
from test_diagram_groups import groups_saga, hold_saga
from test_diagrams import (
    Drawings,
    diamond_saga,
    edges,
    late_saga,
    long_saga,
    needs_dot,
    of_class,
    order_saga,
)

from statesaga import Orchestrator, SagaStateMachine
from statesaga.diagrams import render, to_dot
from statesaga.diagrams.examples import InstantClock, example_drawings
from statesaga.diagrams.model import TIMES
from statesaga.examples.trip import build_trip
from statesaga.examples.trip_choreography import build_trip_choreography

Box = tuple[float, float, float, float]


@pytest.fixture(scope="module")
def drawings() -> Drawings:
    return asyncio.run(example_drawings())


def every_drawing(drawings: Drawings) -> list[tuple[str, str]]:
    """(name, DOT) of the committed examples (a parallel trip and an order paying through a
    sub-saga among them) and of machines with branches, loops and parallel groups."""
    more = {"order": order_saga(), "diamond": diamond_saga(), "long": long_saga(),
            "late": late_saga(), "choreography": build_trip_choreography(),
            "loop": hold_saga(), "groups": groups_saga()}
    return ([(name, to_dot(m, r, children=c)) for name, (m, r, c) in drawings.items()]
            + [(name, to_dot(m)) for name, m in more.items()])


def laid_out(dot: str) -> tuple[list[tuple[str, str, Box]], list[tuple[str, Box]],
                                list[tuple[str, float, float]]]:
    """dot's layout: edge labels (edge, text, box), states (name, box), points on lines."""
    out = json.loads(subprocess.run(["dot", "-Tjson"], input=dot, capture_output=True,
                                    text=True, check=True).stdout)
    nodes = out["objects"]
    labels, states, points = [], [], []
    for n in nodes:
        if "pos" in n:
            x, y = map(float, n["pos"].split(","))
            w, h = float(n["width"]) * 36, float(n["height"]) * 36  # inches, halved, in pt
            states.append((n["name"], (x - w, y - h, x + w, y + h)))
    for e in out["edges"]:
        name = f"{nodes[e['tail']]['name']} -> {nodes[e['head']]['name']}"
        for op in e.get("_ldraw_", []):
            if op["op"] == "T":
                (x, y), w = op["pt"], op["width"]
                left = {"c": x - w / 2, "l": x, "r": x - w}[op["align"]]
                labels.append((name, op["text"], (left, y - 2, left + w, y + 8)))
        if "invis" in e.get("style", ""):
            continue
        for op in e["_draw_"]:
            if op["op"] == "b":  # cubic Bezier pieces: sampled densely
                for a, b, c, d in _pieces(op["points"]):
                    for k in range(21):
                        t = k / 20
                        x, y = ((1 - t) ** 3 * p + 3 * (1 - t) ** 2 * t * q + 3 * (1 - t) * t
                                * t * r + t ** 3 * s for p, q, r, s in zip(a, b, c, d,
                                                                           strict=True))
                        points.append((name, x, y))
    return labels, states, points


def _pieces(points: list[list[float]]) -> list[list[list[float]]]:
    return [points[i:i + 4] for i in range(0, len(points) - 3, 3)]


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def collisions(dot: str) -> list[tuple[str, str]]:
    """Every label that touches another label, a state, or another edge's line.

    A label crossing to the mirror column lies on a white ground over its own line, so
    that one may pass under it.
    """
    labels, states, points = laid_out(dot)
    found = [(t1, t2) for (_, t1, b1), (_, t2, b2) in itertools.combinations(labels, 2)
             if _overlap(b1, b2)]
    for edge, text, box in labels:
        found += [(text, state) for state, sbox in states if _overlap(box, sbox)]
        found += sorted({(text, line) for line, x, y in points if line != edge
                         and box[0] + 1 < x < box[2] - 1 and box[1] + 1 < y < box[3] - 1})
    return found


# -- labels -----------------------------------------------------------------------------------


@needs_dot
def test_no_label_touches_another_label_a_state_or_another_line(drawings: Drawings) -> None:
    assert [] == [(name, c) for name, dot in every_drawing(drawings) for c in collisions(dot)]


def test_edges_carry_the_machines_own_events_and_the_legend_names_statesagas() -> None:
    dot = to_dot(order_saga())
    labels = {(a, b, at["class"]): at.get("label") or at.get("xlabel")
              for a, b, at in edges(dot)}
    assert "credit_ok" == labels[("check_credit", "approve", "forward")]
    assert "credit_refused" in (labels[("check_credit", "compensating_reserve_stock",
                                        "failure")] or "")
    assert None is labels[("ship", "compensating_ship", "unknown")]  # timeout / abort
    assert None is labels[("compensating_approve", "compensating_reserve_stock", "mirror")]
    for said in ("step done (succeed)", "step failed: undo the steps before (fail)",
                 "outcome unknown: undo the step too (timeout, abort)",
                 "undone: walk back (succeed)", "compensation gave up: stuck (fail)",
                 "a person retries it (retry)"):
        assert 1 == dot.count(said), said


def test_a_step_with_nothing_to_undo_walks_back_on_one_edge_whatever_went_wrong() -> None:
    dot = to_dot(build_trip())
    out_of_notify = [(b, at["class"]) for a, b, at in edges(dot) if a == "send_notification"]
    assert [("compensating_charge_payment", "failure"), ("completed", "forward")] == sorted(
        out_of_notify)
    assert ("charge_payment", "compensating_charge_payment") in of_class(dot, "unknown")


async def test_a_timeout_in_a_step_with_nothing_to_undo_is_drawn_taken() -> None:
    async def hangs(ctx: Any) -> None:
        raise TimeoutError("the mail server did not answer")

    m = SagaStateMachine("notify")
    m.step("reserve", lambda ctx: None, compensation=lambda ctx: None)
    m.step("notify", hangs)
    record = await Orchestrator(clock=InstantClock()).run(m, saga_id="n-1")
    assert "timeout" == record.history[2].event
    assert ("notify", "compensating_reserve") in of_class(to_dot(m, record), "taken")


# -- the legend, and leaving it out ---------------------------------------------------------


def test_the_legend_is_one_small_table(drawings: Drawings) -> None:
    machine, record, _ = drawings["payment-stuck"]
    dot = to_dot(machine, record)
    assert 1 == dot.count('\t"~legend" [')
    assert "cluster" not in dot
    assert "taken by this saga" in dot
    assert "would undo on retry" in dot


@needs_dot
def test_legend_false_leaves_it_out_of_the_source_and_the_drawing(
        drawings: Drawings, tmp_path: Any) -> None:
    machine, record, _ = drawings["trip-compensated"]
    assert "~legend" not in to_dot(machine, record, legend=False)
    svg = render(machine, tmp_path / "bare.svg", record, legend=False).read_text()
    assert "step done" not in svg
    assert "step done" in render(machine, tmp_path / "full.svg", record).read_text()


def test_policies_read_as_policies_and_counts_only_where_something_happened(
        drawings: Drawings) -> None:
    machine, record, _ = drawings["payment-stuck"]
    plain, lived = to_dot(machine), to_dot(machine, record)
    assert "up to 5 tries" in plain
    assert "attempts" not in plain
    assert "failed 2" not in plain
    assert f"failed 2{TIMES}" in lived
    notify = lived.split("\tsend_notification [", 1)[1].split("\n")[0]
    assert "up to 2 tries" in notify
    assert "failed" not in notify  # it never ran: no count
