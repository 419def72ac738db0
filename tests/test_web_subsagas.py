"""The console and sub-sagas: a saga's page lists its children, linked, and draws them
inside their steps; a child's page links its parent. Over HTTP and in a real browser."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette", reason="pip install 'statesaga[web]'")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

import structlog  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from test_web_browser import ROOT, need_browser, serving  # noqa: E402

from statesaga import Orchestrator, SQLiteStore  # noqa: E402
from statesaga.diagrams.examples import InstantClock  # noqa: E402
from statesaga.examples.order import build_order, order_services  # noqa: E402
from statesaga.web import app  # noqa: E402


def seeded(db: Path) -> Any:
    """A store with order-9, compensated after shipping failed: its payment was reverted."""
    orders = order_services()
    orders.fail_at("ship")
    machine = build_order(orders)

    async def run() -> None:
        store = SQLiteStore(db)
        with structlog.testing.capture_logs():
            await Orchestrator(store=store, clock=InstantClock()).run(
                machine, {"amount": 25, "sku": "book"}, saga_id="order-9")
        await store.close()

    asyncio.run(run())
    return machine


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    machine = seeded(tmp_path / "sagas.db")
    with TestClient(app(SQLiteStore(tmp_path / "sagas.db"), sagas=[machine])) as c:
        yield c


def test_a_sagas_page_lists_its_sub_sagas_linked_to_their_own_pages(
        client: TestClient) -> None:
    page = client.get("/sagas/order-9").text
    assert "<h2>Sub-sagas</h2>" in page
    assert '<a class="id sub-saga" href="/sagas/order-9%2Fpay">order-9/pay</a>' in page
    assert "runs sub-saga &#x27;order-9/pay&#x27;" in page  # the timeline names it too


def test_a_sub_sagas_page_links_the_saga_it_is_a_step_of(client: TestClient) -> None:
    page = client.get("/sagas/order-9%2Fpay").text
    assert ('<th></th></tr></thead><tbody>' in page and
            '<td>sub-saga of</td><td><a class="id" href="/sagas/order-9">order-9</a> (order), '
            "its step <code>pay</code>") in page
    assert "<h2>Sub-sagas</h2>" not in page


def test_the_json_names_the_parent_and_the_children(client: TestClient) -> None:
    parent = client.get("/api/sagas/order-9").json()
    child = client.get("/api/sagas/order-9%2Fpay").json()
    assert (None, [{"saga_id": "order-9/pay", "step": "pay", "name": "payment",
                    "status": "compensated", "state": "compensated"}]) == (
        parent["parent"], parent["children"])
    assert ("order-9", []) == (child["parent"]["saga_id"], child["children"])


def test_the_diagram_draws_the_child_inside_its_step(client: TestClient) -> None:
    svg = unescape(client.get("/sagas/order-9/diagram.svg").text)
    assert "order-9/pay: compensated" in svg
    assert "pay/compensating_debit_payment_account" in svg  # the child's mirror, drawn


@pytest.fixture
def console(tmp_path: Path) -> Iterator[str]:
    seeded(tmp_path / "sagas.db")
    yield from serving(tmp_path, ["--saga", "order_sagas:order"],
                       f"{ROOT}{os.pathsep}{ROOT / 'tests'}")


@pytest.mark.browser
def test_an_operator_goes_from_a_saga_to_its_sub_saga_and_back(console: str) -> None:
    sync_api = need_browser()
    from test_web_browser import ARGS, CHROMIUM

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.goto(console + "/sagas/order-9")
            assert 1 == page.locator(".diagram svg").count()
            page.click("a.sub-saga >> text=order-9/pay")
            page.wait_for_url("**/sagas/order-9%2Fpay")
            assert "sub-saga of" in page.inner_text("main")
            assert "undone: the saga it is a step of is compensating" in page.inner_text("main")
            page.click("main a.id >> text=order-9")
            page.wait_for_url("**/sagas/order-9")
            assert "Sub-sagas" in page.inner_text("main")
        finally:
            browser.close()
