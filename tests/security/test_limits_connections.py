"""Connection rate per source address and connections per user, against a real broker:
the CONNECT beyond the limit gets CONNACK 0x9F / 0x97 (MQTT 5) or return code 3 Server
unavailable (3.1.1) and is closed; an address refills with time, a user's connection
count frees when one closes, a take-over of a client id is not an extra connection, and
without the settings nothing is refused."""

from __future__ import annotations

import pytest

from adminhttp import scrape, value
from brokerthread import ManualClock, RunningBroker
from paho_helpers import V5, V311, Clients, Conn, make_client, start
from proxyheaders import v2
from rawmqtt import LEVELS, Pkt, RawClient, RawFactory, encode_props, frame, utf8

CONNECTION_RATE_EXCEEDED = 0x9F
QUOTA_EXCEEDED = 0x97
SERVER_UNAVAILABLE_V3 = 3
SESSION_TAKEN_OVER = 0x8E


def connect_bytes(client_id: str, level: int, username: str | None = None) -> bytes:
    """A clean CONNECT, with a user name if given."""
    flags = 0x02 | (0x80 if username is not None else 0)
    body = utf8("MQTT") + bytes([level, flags]) + (60).to_bytes(2, "big")
    if level == 5:
        body += encode_props(None)
    payload = utf8(client_id) + (utf8(username) if username is not None else b"")
    return frame(0x10, body + payload)


def attempt(
    raw: RawFactory,
    broker: RunningBroker,
    client_id: str,
    level: int,
    username: str | None = None,
    header: bytes = b"",
) -> tuple[RawClient, Pkt | None]:
    """Open a connection and CONNECT (behind a PROXY ``header`` if given); returns the
    client and the broker's answer."""
    client = raw(broker, level)
    client.send(header + connect_bytes(client_id, level, username))
    return client, client.recv_or_close()


def refusal_code(level: int, reason: int) -> int:
    """The CONNACK code a refusal with MQTT 5 ``reason`` has at ``level``."""
    return reason if level == 5 else SERVER_UNAVAILABLE_V3


def assert_refused(client: RawClient, answer: Pkt | None, code: int) -> None:
    assert answer is not None and answer.name == "CONNACK", answer
    assert answer.reason_code == code
    assert client.wait_closed() == []


def assert_accepted(answer: Pkt | None) -> None:
    assert answer is not None and answer.name == "CONNACK", answer
    assert answer.reason_code == 0


def paho_as(
    clients: Clients, broker: RunningBroker, client_id: str, version: int, user: str
) -> Conn:
    """A paho client that CONNECTs with a user name (accepted or not) and never
    reconnects on its own."""
    client, collector = make_client(client_id, version)
    client.username_pw_set(user)
    client.reconnect_delay_set(min_delay=60, max_delay=120)
    start(client, collector, broker, client_id, version)
    conn = Conn(client, collector)
    clients.all.append(conn)
    return conn


# -- connection rate per address -------------------------------------------------------------


@LEVELS
def test_connects_beyond_an_addresss_rate_are_refused_until_it_refills(
    make_broker, raw, clock: ManualClock, level: int
) -> None:
    broker = make_broker(
        clock=clock, address_connection_rate=2, address_connection_burst=1, http_port=0
    )
    for n in range(3):  # two a second, and one more at once
        assert_accepted(attempt(raw, broker, f"c{n}", level)[1])
    refused = refusal_code(level, CONNECTION_RATE_EXCEEDED)
    assert_refused(*attempt(raw, broker, "c3", level), refused)
    broker.advance(0.5)  # one more token
    assert_accepted(attempt(raw, broker, "c4", level)[1])
    assert_refused(*attempt(raw, broker, "c5", level), refused)
    broker.advance(60)
    for n in range(6, 9):
        assert_accepted(attempt(raw, broker, f"c{n}", level)[1])
    assert broker.broker.core.traffic.refused == {CONNECTION_RATE_EXCEEDED: 2}
    samples = scrape(broker)
    assert value(samples, "roost_connections_refused_total", reason="connection_rate_exceeded") == 2


def test_each_source_address_has_its_own_connection_rate(
    make_broker, raw, clock: ManualClock
) -> None:
    """Behind a load balancer the address is the one the PROXY header names."""
    broker = make_broker(clock=clock, address_connection_rate=1, proxy_protocol=True)
    first, second, v6 = (
        v2("203.0.113.7"),
        v2("203.0.113.8"),
        v2("2001:db8::7", destination="2001:db8::1"),
    )
    assert_accepted(attempt(raw, broker, "a1", 5, header=first)[1])
    assert_refused(*attempt(raw, broker, "a2", 5, header=first), CONNECTION_RATE_EXCEEDED)
    assert_accepted(attempt(raw, broker, "b1", 5, header=second)[1])
    assert_accepted(attempt(raw, broker, "c1", 5, header=v6)[1])
    assert_refused(*attempt(raw, broker, "c2", 5, header=v6), CONNECTION_RATE_EXCEEDED)


@pytest.mark.parametrize(
    ("version", "code"), [(V311, 0x88), (V5, CONNECTION_RATE_EXCEEDED)], ids=["v311", "v5"]
)
def test_paho_hears_why_its_connect_was_refused(
    make_broker, clients: Clients, clock: ManualClock, version: int, code: int
) -> None:
    """paho reports return code 3 of MQTT 3.1.1 as "Server unavailable" (0x88)."""
    broker = make_broker(clock=clock, address_connection_rate=1)
    assert clients.connect(broker, "first", version).connack_rc == 0
    refused = clients.connect(broker, "second", version, expect_success=False)
    assert refused.connack_rc == code


# -- connections per user --------------------------------------------------------------------


@LEVELS
def test_the_connection_beyond_a_users_maximum_is_refused(make_broker, raw, level: int) -> None:
    broker = make_broker(max_connections_per_user=2)
    first, answer = attempt(raw, broker, "one", level, "alice")
    assert_accepted(answer)
    assert_accepted(attempt(raw, broker, "two", level, "alice")[1])
    assert_refused(*attempt(raw, broker, "three", level, "alice"), refusal_code(level, 0x97))
    assert_accepted(attempt(raw, broker, "bob-1", level, "bob")[1])  # another user
    assert_accepted(attempt(raw, broker, "anon", level)[1])  # no user name: not counted
    first.disconnect()
    broker.wait_offline("one")
    assert_accepted(attempt(raw, broker, "three", level, "alice")[1])
    assert broker.broker.core.traffic.refused == {QUOTA_EXCEEDED: 1}


@LEVELS
def test_a_take_over_of_a_users_client_id_is_not_an_extra_connection(
    make_broker, raw, level: int
) -> None:
    broker = make_broker(max_connections_per_user=2)
    assert_accepted(attempt(raw, broker, "one", level, "alice")[1])
    old, answer = attempt(raw, broker, "two", level, "alice")
    assert_accepted(answer)
    for _ in range(3):  # "two" reconnects, again and again: it replaces itself
        new, answer = attempt(raw, broker, "two", level, "alice")
        assert_accepted(answer)
        closing = old.wait_closed()
        if level == 5:
            assert [(p.name, p.reason_code) for p in closing] == [
                ("DISCONNECT", SESSION_TAKEN_OVER)
            ]
        old = new
    assert_refused(*attempt(raw, broker, "three", level, "alice"), refusal_code(level, 0x97))
    assert broker.broker.core.limits.users.count("alice") == 2


@pytest.mark.parametrize(
    ("version", "code"), [(V311, 0x88), (V5, QUOTA_EXCEEDED)], ids=["v311", "v5"]
)
def test_paho_is_refused_beyond_its_users_maximum(
    make_broker, clients: Clients, version: int, code: int
) -> None:
    broker = make_broker(max_connections_per_user=1)
    assert paho_as(clients, broker, "p1", version, "carol").connack_rc == 0
    assert paho_as(clients, broker, "p2", version, "carol").connack_rc == code
    assert paho_as(clients, broker, "p1", version, "carol").connack_rc == 0  # a take-over


# -- defaults --------------------------------------------------------------------------------


def test_without_limit_settings_nothing_is_refused(make_broker, raw, clock: ManualClock) -> None:
    broker = make_broker(clock=clock)  # the clock never moves: no bucket could refill
    for n in range(30):
        assert_accepted(attempt(raw, broker, f"d{n}", 5 if n % 2 else 4, "dave")[1])
    core = broker.broker.core
    assert core.traffic.refused == {}
    assert core.limits.addresses is None
    assert core.limits.users.count("dave") == 0  # not even counted
