"""The dashboard in headless Chromium (SPEC 9): paste a key, see the API's total, see an
ingested tap arrive without reloading. A screenshot lands in the test's tmp_path."""

import json
import os
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect, sync_playwright

from analytics.ingest import TapRow, store_taps
from teams.keys import IssuedKey
from teams.models import Tag
from tests.conftest import in_ci
from tests.servers import LIVE_PORTS, free_port, serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def chromium() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK) and not in_ci():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def api(server: str, path: str, key: IssuedKey, body: Any = None) -> Any:
    request = urllib.request.Request(
        server + path,
        data=None if body is None else json.dumps(body).encode(),
        headers={"X-Api-Key": key.plaintext, "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def stored(tag: Tag) -> datetime:
    """Seven taps (28 in all) over the last three days; returns now."""
    now = datetime.now(UTC)
    store_taps([TapRow(n, tag.uid, n, now - timedelta(days=n % 3, minutes=n)) for n in range(1, 8)])
    return now


def test_the_dashboard_charts_the_api_total_and_shows_a_new_tap_live(
    tmp_path: Path,
    read_key: IssuedKey,
    ingest_key: IssuedKey,
    tag: Tag,
    stored: datetime,
    chromium: Any,  # last: Playwright runs an event loop, and the ORM refuses to run in one
) -> None:
    now = stored
    start, end = (now - timedelta(days=6)).date().isoformat(), now.date().isoformat()

    with serve({}, workers=1, port=free_port(LIVE_PORTS)) as server:
        query = urlencode({"start": start, "end": end, "interval": "day", "tz": "UTC"})
        expected = api(server, f"/v1/analytics/taps?{query}", read_key)["total"]
        page = chromium.new_page(timezone_id="UTC")
        console_errors: list[str] = []
        page.on(
            "console",
            lambda message: message.type == "error" and console_errors.append(message.text),
        )
        page.goto(server + "/dashboard/")
        zones = page.locator("#tz option").all_text_contents()
        page.fill("#start", start)
        page.fill("#end", end)
        page.select_option("#tz", "UTC")
        page.fill("#key", read_key.plaintext)
        page.click("#connect")
        page.wait_for_selector("#live-status.live", timeout=10_000)
        # Locator assertions, not wait_for_function: a string predicate is evaluated with
        # eval, which the page's Content-Security-Policy forbids.
        expect(page.locator("#total")).to_have_text(str(expected), timeout=10_000)
        shown = page.text_content("#total")
        bars = page.locator("#chart rect.bar").count()

        answer = api(server, "/v1/taps", ingest_key, [{"id": 100, "tag": tag.uid, "count": 3}])
        page.wait_for_selector("#feed li[data-tap-id='100']", timeout=10_000)
        expect(page.locator("#total")).to_have_text(str(expected + 3), timeout=10_000)
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        in_url = read_key.plaintext in page.url

        # Forgetting the key leaves nothing of the team's taps on screen.
        page.click("#forget")
        expect(page.locator("#total")).to_have_text("–", timeout=10_000)
        after_forget = (page.locator("#chart rect").count(), page.locator("#feed li").count())

    assert expected == sum(n for n in range(1, 8))
    assert after_forget == (0, 0)
    # The API's zone names, current ones included (Chromium's own list has Asia/Calcutta).
    assert zones[:2] == ["team's zone", "UTC"] and "Asia/Kolkata" in zones
    assert console_errors == []
    assert shown == str(expected)
    assert bars == 7
    assert answer == {"accepted": 1, "duplicates": 0}
    assert not in_url
    assert (tmp_path / "dashboard.png").stat().st_size > 0


def test_the_dashboard_says_when_a_key_is_refused(tmp_path: Path, db: None, chromium: Any) -> None:
    with serve({}, workers=1, port=free_port(LIVE_PORTS)) as server:
        page = chromium.new_page()
        page.goto(server + "/dashboard/")
        page.fill("#key", "wrong.key")
        page.click("#connect")
        page.wait_for_selector("#live-status.closed", timeout=10_000)
        expect(page.locator("#message")).not_to_be_empty(timeout=10_000)
        message = page.text_content("#message")
        page.screenshot(path=str(tmp_path / "refused.png"), full_page=True)

    assert message is not None
    # From the REST answer or the socket's close reason, whichever comes last.
    assert "Key rejected: Invalid API key." in message or message == (
        "Live feed closed: Invalid API key."
    )


def test_the_dashboard_reconnects_and_gets_the_taps_it_missed(
    tmp_path: Path, read_key: IssuedKey, ingest_key: IssuedKey, tag: Tag, chromium: Any
) -> None:
    with serve({}, workers=1, port=free_port(LIVE_PORTS)) as ingest_server:
        port = free_port(LIVE_PORTS)
        page = chromium.new_page()
        with serve({}, workers=1, port=port) as server:
            page.goto(server + "/dashboard/")
            page.fill("#key", read_key.plaintext)
            page.click("#connect")
            page.wait_for_selector("#live-status.live", timeout=10_000)
        # The page's server is gone: the socket drops, and the page says so.
        page.wait_for_selector("#live-status.down", timeout=10_000)
        api(ingest_server, "/v1/taps", ingest_key, [{"id": 77, "tag": tag.uid}])
        with serve({}, workers=1, port=port):
            page.wait_for_selector("#live-status.live", timeout=20_000)
            page.wait_for_selector("#feed li[data-tap-id='77']", timeout=10_000)
            page.screenshot(path=str(tmp_path / "reconnected.png"), full_page=True)


def test_the_dashboard_shows_an_empty_range_and_when_the_rate_limit_frees(
    tmp_path: Path, read_key: IssuedKey, tag: Tag, chromium: Any
) -> None:
    with serve({"TAPS_RATE_LIMIT": "1/hour"}, workers=1, port=free_port(LIVE_PORTS)) as server:
        page = chromium.new_page(timezone_id="UTC")
        page.goto(server + "/dashboard/")
        page.fill("#start", "2001-01-01")
        page.fill("#end", "2001-01-07")
        page.fill("#key", read_key.plaintext)
        page.click("#connect")
        expect(page.locator("#empty")).to_be_visible(timeout=10_000)
        expect(page.locator("#total")).to_have_text("0")
        page.click("#load")
        expect(page.locator("#message")).to_contain_text("Rate limit reached", timeout=10_000)
        expect(page.locator("#load")).to_be_disabled()
        page.screenshot(path=str(tmp_path / "rate-limited.png"), full_page=True)
