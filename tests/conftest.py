"""Shared fixtures: a real Roost broker on an ephemeral port, run in a background thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from roost.attach import Authenticator
from roost.broker import Broker
from roost.config import Settings


class RunningBroker:
    """A broker serving on 127.0.0.1:<ephemeral port> in its own event-loop thread."""

    def __init__(self, settings: Settings, authenticator: Authenticator | None = None) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.broker = Broker(settings, authenticator)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.call(self.broker.start())
        self.host = "127.0.0.1"
        self.port: int = self.broker.port

    def call(self, coro: Any, timeout: float = 10.0) -> Any:
        """Run a coroutine on the broker's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.broker.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[Callable[..., RunningBroker]]:
    """Factory: ``make_broker(max_packet_size=..., ...)`` starts a broker with those settings
    (by default the SQLite store in a fresh temporary data directory), and optionally an
    ``authenticator``."""
    started: list[RunningBroker] = []

    def factory(authenticator: Authenticator | None = None, **overrides: Any) -> RunningBroker:
        defaults = {"host": "127.0.0.1", "port": 0, "data_dir": str(tmp_path / "data")}
        settings = Settings(**{**defaults, **overrides})
        running = RunningBroker(settings, authenticator)
        started.append(running)
        return running

    yield factory
    for running in started:
        running.stop()


@pytest.fixture
def broker(make_broker: Callable[..., RunningBroker]) -> RunningBroker:
    """A broker with default settings."""
    return make_broker()
