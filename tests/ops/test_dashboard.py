"""The dashboard in a real browser (Playwright driving Debian's chromium): log in with the
token, see a connected client, kick it (the client gets DISCONNECT 0x98), decide a pending
transaction, watch the message-rate charts move while a client publishes; no page logs a
console error or throws.

With ``ROOST_DASHBOARD_SCREENSHOT=PATH`` set, the chart test also saves a screenshot of the
overview (traffic flowing, clients connected) to PATH: that is how docs/dashboard.png is
made."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from adminhttp import TOKEN, http_base
from brokerthread import RunningBroker
from debian import ensure_binary
from paho_helpers import Clients, Conn, code_of, publish_half_message, wait_until
from roost.errors import ReasonCode

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def ensure_chromium() -> None:
    """Debian's chromium is the browser (Playwright's own download is not used)."""
    if not os.access(CHROMIUM, os.X_OK):
        ensure_binary("chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def console_errors() -> list[str]:
    """Console messages of type error and uncaught exceptions of the page; every test
    ends with none (a test expecting one takes it out of the list)."""
    return []


@pytest.fixture
def page(browser: Browser, node: RunningBroker, console_errors: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1100, "height": 760})
    opened = context.new_page()
    opened.on(
        "console",
        lambda message: (
            console_errors.append(f"console: {message.text} ({message.location['url']})")
            if message.type == "error"
            else None
        ),
    )
    opened.on("pageerror", lambda error: console_errors.append(f"pageerror: {error}"))
    opened.goto(http_base(node) + "/")
    yield opened
    opened.wait_for_timeout(0)  # let events already received be dispatched
    context.close()
    assert console_errors == []


def log_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login button[type=submit]")


def test_a_wrong_token_is_refused(page: Page, console_errors: list[str]) -> None:
    log_in(page, "wrong")
    expect(page.locator("#login-error")).to_have_text("The token was refused.")
    expect(page.locator("#app")).to_be_hidden()

    # the browser itself logs the refused call; nothing else may be there
    def refusal_logged() -> bool:
        page.wait_for_timeout(10)  # dispatches the page's events meanwhile
        return any("status of 401" in error for error in console_errors)

    wait_until(refusal_logged, what="the browser to log the 401")
    assert all("status of 401" in error for error in console_errors), console_errors
    console_errors.clear()


def test_see_a_client_and_kick_it(page: Page, node: RunningBroker, clients: Clients) -> None:
    device = clients.connect(node, "device-42")
    log_in(page, TOKEN)
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator(".card[data-label='Clients connected'] .value")).to_have_text("1")
    page.click("#tabs button[data-tab=clients]")
    row = page.locator("#client-rows tr", has_text="device-42")
    expect(row).to_be_visible()
    row.click()
    expect(page.locator("#client-title")).to_have_text("device-42")
    page.fill("#kick-reason", "moved to another rack")
    page.click("#kick")
    wait_until(lambda: bool(device.disconnects), what="DISCONNECT at the client")
    assert code_of(device.disconnects[0]) == ReasonCode.ADMINISTRATIVE_ACTION
    expect(page.locator("#client-rows tr", has_text="device-42")).to_have_count(0)
    # the token stays for this tab: a reload does not ask again
    page.reload()
    expect(page.locator("#app")).to_be_visible()


def test_decide_a_pending_transaction(page: Page, node: RunningBroker, clients: Clients) -> None:
    consumer = clients.connect(node, "consumer")
    consumer.sub("orders", 1)
    producer = clients.connect(node, "producer")
    publish_half_message(producer, "orders", b"order 7", "order-7", "shop")
    log_in(page, TOKEN)
    page.click("#tabs button[data-tab=transactions]")
    row = page.locator("#transaction-rows tr", has_text="order-7")
    expect(row).to_be_visible()
    row.get_by_role("button", name="Commit").click()
    consumer.wait_for_payload(b"order 7")
    expect(page.locator("#transaction-rows tr")).to_have_count(0)


def chart_series(page: Page, chart: str) -> list[float]:
    """The points the page last drew on a rate chart (its read-only ``data-series``)."""
    text = page.get_attribute(f"#{chart}", "data-series") or ""
    return [float(value) for value in text.split()]


def test_the_rate_charts_move_while_a_client_publishes(
    page: Page, node: RunningBroker, clients: Clients
) -> None:
    reader = clients.connect(node, "dashboard-reader")
    reader.sub("sensors/#", 0)
    sensor = clients.connect(node, "sensor-7")
    log_in(page, TOKEN)
    expect(page.locator(".card[data-label='Clients connected'] .value")).to_have_text("2")
    # a quiet broker: the first rates drawn are all zero
    wait_until(lambda: len(chart_series(page, "chart-in")) >= 1, what="a first rate point")
    assert not any(chart_series(page, "chart-in"))
    assert not any(chart_series(page, "chart-out"))

    def publish_some(conn: Conn, count: int = 5) -> None:
        for index in range(count):
            conn.client.publish(f"sensors/7/reading/{index}", b"21.5", 0)

    def charts_moved() -> bool:
        publish_some(sensor)
        return any(chart_series(page, "chart-in")) and any(chart_series(page, "chart-out"))

    wait_until(charts_moved, what="both rate charts to show traffic")
    reader.wait_for_payload(b"21.5")

    screenshot = os.environ.get("ROOST_DASHBOARD_SCREENSHOT")
    if screenshot:
        # a few more points, so the picture shows a line and not a dot
        wait_until(
            lambda: publish_some(sensor) is None and len(chart_series(page, "chart-in")) >= 8,
            timeout=60,
            what="eight rate points",
        )
        box = page.locator("#overview").bounding_box()
        assert box is not None
        page.screenshot(
            path=screenshot,
            clip={"x": 0, "y": 0, "width": 1100, "height": box["y"] + box["height"] + 16},
        )
