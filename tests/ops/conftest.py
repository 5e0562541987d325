"""Fixtures of the operations tests: a broker with its HTTP listener and admin API on, the
admin API client, and tracked paho clients."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from adminhttp import TOKEN, AdminApi
from brokerthread import BrokerFactory, RunningBroker
from paho_helpers import Clients


@pytest.fixture
def node(make_broker: BrokerFactory) -> RunningBroker:
    """A broker with an HTTP listener on a free port and the admin API enabled."""
    return make_broker(http_port=0, admin_token=TOKEN)


@pytest.fixture
def api(node: RunningBroker) -> AdminApi:
    return AdminApi(node)


@pytest.fixture
def clients(make_broker: BrokerFactory) -> Iterator[Clients]:
    tracked = Clients()
    yield tracked
    tracked.close_all()
