"""Fixtures of the integration and security tests: tracked paho clients and raw MQTT clients.

``clients`` connects paho clients (``paho_helpers.Clients``: each a ``Conn`` that records
messages, CONNACK flags, UNSUBACKs and DISCONNECT reason codes). ``raw`` opens plain sockets
that speak hand-encoded MQTT 3.1.1 / 5.0 (``rawmqtt.RawFactory``), for flows paho cannot
interrupt (a QoS 2 exchange cut in the middle) and for checking exact reason codes. Both
close their clients at teardown, before the test's brokers stop.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from paho_helpers import Clients
from rawmqtt import RawFactory


@pytest.fixture
def clients(make_broker: Any) -> Iterator[Clients]:
    tracked = Clients()
    yield tracked
    tracked.close_all()


@pytest.fixture
def raw(make_broker: Any) -> Iterator[RawFactory]:
    factory = RawFactory()
    yield factory
    factory.close_all()
