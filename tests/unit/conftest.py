"""Fixtures of the unit tests: an event loop of the test's own, for the stores that write
from it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A new event loop, not running: a test drives it with ``run_until_complete``."""
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()
