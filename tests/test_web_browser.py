"""The console in a real browser: Debian's Chromium driven by Playwright, against `statesaga web`.

The saga page's screenshot for the README (docs/console-saga.png) is taken here, so it stays
current. Without Chromium (or Playwright) these tests skip saying how to install it, and fail
when STATESAGA_REQUIRE_SERVICES=1.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from statesaga import Orchestrator, SQLiteStore
from statesaga.examples.trip import build_trip, trip_services
from statesaga.testing import FakeClock

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
TOKEN = "browser-token"
SCREENSHOT = ROOT / "docs" / "console-saga.png"


def need_browser() -> Any:
    """Playwright's sync API, with Chromium present; else skip (or fail in CI)."""
    missing = None
    try:
        from playwright import sync_api
    except ImportError:
        missing = "Playwright is not installed: pip install -e '.[dev]'"
    if missing is None and not Path(CHROMIUM).exists():
        missing = (f"Chromium is not at {CHROMIUM}: install Debian's package "
                   "(apt-get install -y chromium); never a downloaded browser")
    if missing is not None:
        if os.environ.get("STATESAGA_REQUIRE_SERVICES") == "1":
            pytest.fail(missing + " (STATESAGA_REQUIRE_SERVICES=1 makes this a failure)")
        pytest.skip(missing)
    return sync_api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def console(tmp_path: Path) -> Iterator[str]:
    """`statesaga web` over a store with one stuck trip (its hotel cancel failed, now fixed)."""
    services = trip_services()
    services.fail_at("charge_payment")
    services.fail_compensation("book_hotel")
    db = tmp_path / "sagas.db"

    async def seed() -> None:
        random.seed(7)  # the retries' jitter: the same times, so the same screenshot
        store = SQLiteStore(db)
        orch = Orchestrator(store=store, clock=FakeClock(1_767_000_000.0), owner="seed")
        await orch.run(build_trip(services), {"flight": "LH1", "hotel": "Adlon",
                                              "amount": 420}, saga_id="trip-42")
        await store.close()

    asyncio.run(seed())
    yield from serving(tmp_path, ["--token", TOKEN], str(ROOT))


def serving(cwd: Path, args: list[str], pythonpath: str) -> Iterator[str]:
    """`statesaga web` on `cwd`'s sagas.db in a child process (with `args`), until closed:
    its URL once it answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "statesaga.cli", "web", "--store", "sqlite:///sagas.db",
         "--port", str(port), *args], cwd=cwd,
        env={**os.environ, "PYTHONPATH": pythonpath}, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/api/outbox", timeout=1).read()
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"statesaga web exited: {server.stderr.read()}")  # type: ignore[union-attr]
                time.sleep(0.05)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright."""
    sync_api = need_browser()
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_an_operator_finds_a_stuck_saga_and_retries_it(console: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 1500})
    page.goto(console + "/")
    assert "stuck: 1" in page.inner_text(".counts")
    page.click("a.id >> text=trip-42")
    page.wait_for_url("**/sagas/trip-42")
    assert "Stuck." in page.inner_text("main")
    assert 1 == page.locator(".diagram svg").count()
    assert "gave up: stuck" in page.inner_text("table >> nth=1")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    shot = page.screenshot(full_page=False)
    if not SCREENSHOT.exists() or SCREENSHOT.read_bytes() != shot:
        SCREENSHOT.write_bytes(shot)
    page.fill("#retry-reason", "hotel API fixed (INC-7)")
    page.fill("#retry-token", TOKEN)
    page.click("#retry-button")
    page.wait_for_url("**/sagas/trip-42?done=retried")
    text = page.inner_text("main")
    assert "Retried" in text
    assert "hotel API fixed (INC-7)" in text  # the reason, in the timeline
    assert "compensated" in text
    assert "Stuck." not in text
    assert "undone" in page.inner_text("table >> nth=1")


def test_a_wrong_token_is_refused_in_the_browser(console: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(console + "/sagas/trip-42")
    page.fill("#retry-reason", "trying")
    page.fill("#retry-token", "guess")
    page.click("#retry-button")
    assert "the token is missing or wrong" in page.inner_text("main")
    page.goto(console + "/sagas/trip-42")
    assert "Stuck." in page.inner_text("main")


def test_the_pages_work_without_javascript(console: str, browser: Any) -> None:
    page = browser.new_context(java_script_enabled=False).new_page()
    page.goto(console + "/?status=failed")
    page.click("a.id >> text=trip-42")
    assert "Stuck." in page.inner_text("main")
    for name in ("Workers", "Outbox", "Dead letters", "Definitions"):
        page.click(f"header >> text={name}")
        assert name.split()[0] in page.inner_text("h1")


def test_the_live_part_refreshes_itself_when_a_saga_moves(console: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(console + "/sagas/trip-42")
    assert "Stuck." in page.inner_text("#live")
    answer = page.request.post(console + "/api/sagas/trip-42/retry",
                               data={"reason": "fixed elsewhere"},
                               headers={"Authorization": f"Bearer {TOKEN}"})
    assert 200 == answer.status
    page.wait_for_function("!document.getElementById('live').innerText.includes('Stuck.')",
                           timeout=15_000)  # no reload: the page's script fetched it
    assert "fixed elsewhere" in page.inner_text("#live")
