"""The dashboard in a real browser (Playwright driving Debian's chromium): log in with the
token, see a connected client, kick it (the client gets DISCONNECT 0x98), decide a pending
transaction."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from adminhttp import TOKEN, http_base
from brokerthread import RunningBroker
from paho_helpers import Clients, code_of, publish_half_message, wait_until
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
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ensure_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, node: RunningBroker) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    opened.goto(http_base(node) + "/")
    yield opened
    context.close()


def log_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login button[type=submit]")


def test_a_wrong_token_is_refused(page: Page) -> None:
    log_in(page, "wrong")
    expect(page.locator("#login-error")).to_have_text("The token was refused.")
    expect(page.locator("#app")).to_be_hidden()


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
