"""Configured limits seen by clients: the per-session queue bound and its drop policy, and the
connection limit."""

from __future__ import annotations

import pytest

from paho_helpers import V5, V311, wait_until

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def persistent(clients, broker, client_id, version):
    expiry = 300 if version == V5 else None
    return clients.connect(broker, client_id, version, clean=False, session_expiry=expiry)


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_bound_keeps_oldest_qos1_messages(make_broker, clients, version):
    """max_queued_messages=10, 20 QoS 1 messages for an offline session: the first 10 are
    kept and delivered in order on reconnect; the rest are dropped."""
    broker = make_broker(max_queued_messages=10)
    s = persistent(clients, broker, "queued", version)
    s.sub("lim/#", 1)
    s.stop()
    p = clients.connect(broker, "pub", V5)
    for i in range(20):
        p.pub("lim/t", str(i).encode(), 1)
    s2 = persistent(clients, broker, "queued", version)
    assert s2.session_present == [True]
    p.pub("lim/t", b"marker", 1)
    s2.wait_for_payload(b"marker")
    got = [m.payload.decode() for m in s2.before(b"marker")]
    assert got == [str(i) for i in range(10)], got


@pytest.mark.parametrize("version", VERSIONS)
def test_queue_bound_drops_qos0_first(make_broker, clients, version):
    """5 QoS 0 messages then 10 QoS 1 messages for an offline session with a queue of 10:
    QoS 0 messages make room for QoS 1 ones, so exactly the 10 QoS 1 messages arrive."""
    broker = make_broker(max_queued_messages=10)
    s = persistent(clients, broker, "queued", version)
    s.sub("lim/#", 1)
    s.stop()
    p = clients.connect(broker, "pub", V5)
    for i in range(5):
        p.pub("lim/t", f"q0-{i}".encode(), 0)
    for i in range(10):
        p.pub("lim/t", f"q1-{i}".encode(), 1)
    s2 = persistent(clients, broker, "queued", version)
    p.pub("lim/t", b"marker", 1)
    s2.wait_for_payload(b"marker")
    got = [m.payload.decode() for m in s2.before(b"marker")]
    assert got == [f"q1-{i}" for i in range(10)], got


def test_max_connections_refuses_the_next_client(make_broker, clients, raw):
    """max_connections=2: a third client is refused with CONNACK 0x97 (quota exceeded) or
    0x89 (server busy) for v5, return code 3 (server unavailable) for 3.1.1; once a client
    leaves, a new one gets in."""
    broker = make_broker(max_connections=2)
    first = clients.connect(broker, "one", V5)
    clients.connect(broker, "two", V311)

    third = raw(broker, 5)
    connack = third.connect("three")
    assert connack is not None and connack.name == "CONNACK", connack
    assert connack.reason_code in (0x97, 0x89), connack
    third.wait_closed()

    third_v3 = raw(broker, 4)
    connack = third_v3.connect("three3")
    assert connack is not None and connack.name == "CONNACK", connack
    assert connack.reason_code == 3, connack
    third_v3.wait_closed()

    first.stop()

    def admitted() -> bool:
        c = raw(broker, 5)
        ack = c.connect("late")
        ok = ack is not None and ack.name == "CONNACK" and ack.reason_code == 0
        if not ok:
            c.drop()
        return ok

    wait_until(admitted, what="a connection slot to free up")
