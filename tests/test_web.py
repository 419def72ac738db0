"""The console over HTTP (Starlette's TestClient): every route, auth, read-only mode, bad input."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from urllib.parse import quote, unquote

import pytest

pytest.importorskip("starlette", reason="pip install 'statesaga[web]'")
pytestmark = pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")

from starlette.testclient import TestClient  # noqa: E402

from statesaga import Event, InMemoryBus, Orchestrator, SQLiteStore  # noqa: E402
from statesaga.examples.trip import build_trip, trip_services  # noqa: E402
from statesaga.testing import FakeClock  # noqa: E402
from statesaga.web import app  # noqa: E402

TOKEN = "s3cret-token"


def stuck_store(path: Path, *ids: str) -> tuple[SQLiteStore, object]:
    """A store with a stuck trip saga per id (the hotel's cancel kept failing), then fixed."""
    services = trip_services()
    machine = build_trip(services)
    services.fail_at("charge_payment")
    services.fail_compensation("book_hotel")

    async def run() -> None:
        store = SQLiteStore(path)
        orch = Orchestrator(store=store, clock=FakeClock(time.time()))  # no real backoff
        for saga_id in ids:
            await orch.run(machine, {"flight": "LH1", "hotel": "Adlon"}, saga_id=saga_id)
        services.reset()
        services.fail_at("charge_payment")
        await orch.run(machine, {"flight": "LH2"}, saga_id="other")  # compensated
        await store.close()

    asyncio.run(run())
    services.reset()  # the hotel API is fixed: a retry now succeeds
    return SQLiteStore(path), machine


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, TestClient]]:
    store, machine = stuck_store(tmp_path / "sagas.db", "stuck-1", "a/b <i>&'\"x")
    with TestClient(app(store, sagas=[machine], token=TOKEN)) as acting, \
            TestClient(app(SQLiteStore(tmp_path / "sagas.db"), sagas=[machine])) as reading:
        yield acting, reading


def test_the_list_shows_counts_and_sagas_newest_first(setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    page = client.get("/")
    assert 200 == page.status_code
    assert "stuck: 2" in page.text
    assert "compensated: 1" in page.text
    ids = re.findall(r'class="id" href="/sagas/([^"]+)"', page.text)
    assert ["other", "a/b <i>&'\"x", "stuck-1"] == [unquote(unescape(i)) for i in ids]
    assert "<i>" not in page.text.split("<main>")[1]  # hostile ids are escaped
    assert ("DENY", "no-referrer") == (page.headers["x-frame-options"],
                                       page.headers["referrer-policy"])


def test_the_json_list_filters_and_pages_with_a_cursor(setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    first = client.get("/api/sagas", params={"status": "failed", "limit": "1"}).json()
    assert ["a/b <i>&'\"x"] == [s["saga_id"] for s in first["sagas"]]
    second = client.get("/api/sagas", params={"status": "failed", "limit": "1",
                                              "after": first["next"]}).json()
    assert (["stuck-1"], None) == ([s["saga_id"] for s in second["sagas"]], second["next"])
    assert 2 == first["counts"]["stuck"]
    found = client.get("/api/sagas", params={"id": "stuck", "error": "HOTELS.CANCEL",
                                             "name": "trip", "from": "2000-01-01"}).json()
    assert ["stuck-1"] == [s["saga_id"] for s in found["sagas"]]


@pytest.mark.parametrize(("params", "says"), [
    ({"status": "nope"}, "unknown status"), ({"limit": "x"}, "limit must be a number"),
    ({"limit": "5000"}, "limit must be between"), ({"after": "bogus"}, "not a cursor"),
    ({"from": "last tuesday"}, "not a date"), ({"name": "x\x00y"}, "printable"),
    ({"error": "e" * 2000}, "at most 1000")])
def test_bad_filters_are_refused_with_what_is_wrong(
        setup: tuple[TestClient, ...], params: dict[str, str], says: str) -> None:
    client, _ = setup
    answer = client.get("/api/sagas", params=params)
    assert (400, True) == (answer.status_code, says in answer.json()["error"])
    page = client.get("/", params=params)
    assert (400, True) == (page.status_code, says in page.text)


def test_the_saga_page_shows_the_diagram_steps_timeline_data_and_advice(
        setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    page = client.get("/sagas/stuck-1")
    assert 200 == page.status_code
    text = page.text
    assert "<svg" in text
    assert "Stuck." in text
    assert "hotels.cancel failed" in text
    assert "retry stuck-1 --reason" in text
    assert re.search(r"<code>book_hotel</code></td><td>done</td><td>1</td><td>gave up: stuck"
                     r"</td><td>5</td>", text)
    assert "&quot;flight&quot;: &quot;LH1&quot;" in text  # the data, as JSON
    assert 'id="retry-button"' in text
    assert "read-only" not in text.lower()


def test_the_saga_json_and_diagram_are_beside_the_page(setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    saga = client.get("/api/sagas/stuck-1").json()
    assert ("failed", True, {"retry": True, "abort": False}) == (
        saga["status"], saga["stuck"], saga["actions"])
    assert ["book_flight", "book_hotel", "charge_payment", "send_notification"] == [
        s["step"] for s in saga["steps"]]
    assert {"flight": "LH1", "hotel": "Adlon"} == saga["data"]
    svg = client.get("/sagas/stuck-1/diagram.svg")
    assert (200, "image/svg+xml") == (svg.status_code, svg.headers["content-type"])
    assert svg.text.lstrip().startswith("<?xml") or "<svg" in svg.text


def test_an_id_with_a_slash_and_markup_is_one_path_segment(
        setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    hostile = "a/b <i>&'\"x"
    page = client.get(f"/sagas/{quote(hostile, safe='')}")
    assert 200 == page.status_code
    assert "a/b &lt;i&gt;&amp;&#x27;&quot;x" in page.text
    assert hostile == client.get(f"/api/sagas/{quote(hostile, safe='')}").json()["saga_id"]
    assert 200 == client.get(f"/sagas/{quote(hostile, safe='')}/diagram.svg").status_code


@pytest.mark.parametrize("path", ["/sagas/ghost", "/api/sagas/ghost", "/sagas/%00",
                                  "/sagas/" + "x" * 5000, "/sagas/%ff%fe",
                                  "/sagas/ghost/diagram.svg", "/nowhere"])
def test_unknown_and_impossible_ids_are_404(setup: tuple[TestClient, ...], path: str) -> None:
    client, _ = setup
    assert 404 == client.get(path).status_code


def test_retry_needs_the_token_and_a_reason_and_records_the_reason(
        setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    url = "/sagas/stuck-1/retry"
    assert 401 == client.post(url, data={"reason": "fixed"}).status_code
    assert 401 == client.post(url, data={"reason": "fixed", "token": "wrong"}).status_code
    assert 401 == client.post(url, data={"reason": "fixed"},
                              headers={"Authorization": "Bearer wrong"}).status_code
    assert 400 == client.post(url, data={"reason": " ", "token": TOKEN}).status_code
    assert 403 == client.post(url, data={"reason": "x", "token": TOKEN},
                              headers={"Origin": "https://evil.example"}).status_code
    assert 403 == client.post(url, data={"reason": "x", "token": TOKEN},
                              headers={"Sec-Fetch-Site": "cross-site"}).status_code
    assert 405 == client.get(url).status_code
    assert 415 == client.post(url, content=b"x", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "text/csv"}).status_code
    done = client.post(url, data={"reason": "hotel API fixed", "token": TOKEN},
                       follow_redirects=False)
    assert (303, "/sagas/stuck-1?done=retried") == (done.status_code, done.headers["location"])
    page = client.get(done.headers["location"]).text
    assert "Retried" in page
    assert "hotel API fixed" in page
    assert "compensated" in page
    again = client.post(url, json={"reason": "twice"},
                        headers={"Authorization": f"Bearer {TOKEN}"})
    assert (409, True) == (again.status_code, "not stuck" in again.json()["error"])


def test_a_bearer_retry_answers_json(setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    hostile = quote("a/b <i>&'\"x", safe="")
    done = client.post(f"/api/sagas/{hostile}/retry", json={"reason": "fixed by ops"},
                       headers={"Authorization": f"Bearer {TOKEN}"})
    assert (200, "compensated", "retried") == (done.status_code, done.json()["status"],
                                               done.json()["done"])
    assert "fixed by ops" in [t["reason"] for t in done.json()["history"]]


def test_abort_compensates_a_pending_saga_with_its_reason(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    machine = build_trip(trip_services())
    asyncio.run(Orchestrator(store=store).start(machine, {}, saga_id="p1"))
    with TestClient(app(SQLiteStore(tmp_path / "s.db"), sagas=[machine], token=TOKEN)) as c:
        done = c.post("/sagas/p1/abort", data={"reason": "customer called", "token": TOKEN})
        assert 200 == done.status_code
        assert "Aborted" in done.text
        assert "customer called" in done.text
        again = c.post("/sagas/p1/abort", data={"reason": "twice", "token": TOKEN})
        assert (409, True) == (again.status_code, "already compensated" in again.text)


def test_a_console_without_a_token_is_read_only_and_says_so(
        setup: tuple[TestClient, ...]) -> None:
    _, reading = setup
    page = reading.get("/sagas/stuck-1").text
    assert "Read-only" in page
    assert "--token" in page
    assert 'id="retry-button"' not in page
    refused = reading.post("/sagas/stuck-1/retry", data={"reason": "x", "token": "anything"})
    assert (403, True) == (refused.status_code, "read-only" in refused.text)
    assert reading.get("/api/sagas/stuck-1").json()["actions"] == {"retry": False,
                                                                   "abort": False}


def test_a_saga_of_an_unregistered_definition_shows_its_timeline_and_how_to_register(
        tmp_path: Path) -> None:
    stuck_store(tmp_path / "sagas.db", "s1")
    with TestClient(app(SQLiteStore(tmp_path / "sagas.db"))) as client:
        page = client.get("/sagas/s1").text
        assert "not registered" in page
        assert "--saga MODULE:ATTR" in page
        assert "<svg" not in page
        assert "Timeline" in page
        assert 404 == client.get("/sagas/s1/diagram.svg").status_code
        definitions = client.get("/api/definitions").json()
        assert [False] == [d["registered"] for d in definitions["definitions"]]
        assert "not registered" in client.get("/definitions").text


def test_the_operators_pages_say_what_to_do(setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    assert "expire" in client.get("/workers").text
    assert {"unsent": 0, "oldest_unsent_at": None, "oldest_age_seconds": 0.0} == \
        client.get("/api/outbox").json()
    assert "Every message in the outbox was sent" in client.get("/outbox").text
    dead = client.get("/dead-letters").text
    assert "No bus was given" in dead
    assert "rabbitmqadmin get queue=" in dead
    assert {"workers": []} == {k: v for k, v in client.get("/api/workers").json().items()
                               if k == "workers"}


def test_dead_letters_of_a_given_bus_are_listed(tmp_path: Path) -> None:
    bus = InMemoryBus()
    bus.dead_letters.append((Event("Pay", {"n": 1}, correlation_id="s<1>"), "no saga"))
    with TestClient(app(SQLiteStore(tmp_path / "x.db"), bus=bus)) as client:
        assert [{"type": "Pay", "correlation_id": "s<1>", "error": "no saga"}] == [
            {k: d[k] for k in ("type", "correlation_id", "error")}
            for d in client.get("/api/dead-letters").json()["letters"]]
        assert "s&lt;1&gt;" in client.get("/dead-letters").text


def test_metrics_are_prometheus_text(setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    lines = answer.text.splitlines()
    assert 'statesaga_sagas{status="failed"} 2' in lines
    assert "statesaga_sagas_stuck 2" in lines
    assert "statesaga_outbox_unsent 0" in lines
    assert "# TYPE statesaga_leases_live gauge" in lines


def test_the_live_part_alone_is_served_to_the_refreshing_script(
        setup: tuple[TestClient, ...]) -> None:
    client, _ = setup
    part = client.get("/", headers={"X-Console-Partial": "1"}).text
    assert not part.startswith("<!doctype")
    assert 'class="counts"' in part
