"""Persistent sessions live in Redis: a client resumes its session on any node, a session
is taken over across nodes with everything it holds, in order."""

from __future__ import annotations

import contextlib
import time

from clusterproc import Cluster, wait_routed
from paho_helpers import Clients, wait_until
from rawmqtt import RawClient

EXPIRY = 300


def raw_subscriber_routed(
    clients: Clients, publisher_node: object, raw: RawClient, topic: str
) -> None:
    """QoS 0 probes from ``publisher_node`` until the raw client gets one."""
    probe = clients.connect(publisher_node, "prober")
    deadline = time.monotonic() + 10
    try:
        while True:
            probe.pub(topic, b"probe", qos=0)
            with contextlib.suppress(AssertionError):  # nothing within 0.2 s: probe again
                packet = raw.recv_or_close(timeout=0.2)
                if packet is not None and packet.name == "PUBLISH":
                    return
            assert time.monotonic() < deadline, "the raw subscriber was never routed to"
    finally:
        probe.stop()


def test_a_persistent_session_with_1000_queued_messages_is_taken_over_across_nodes(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3)
    old = RawClient(nodes[0].host, nodes[0].port, version=5)
    connack = old.connect(
        "walker", clean=False, session_expiry=EXPIRY, props=[("ReceiveMaximum", 10)]
    )
    assert connack is not None and connack.name == "CONNACK"
    old.subscribe(1, [("walk/#", 1)])
    raw_subscriber_routed(clients, nodes[1], old, "walk/probe")
    publisher = clients.connect(nodes[1], "strider")
    count = 1000
    sent = [
        publisher.client.publish("walk/step", str(number).encode(), qos=1)
        for number in range(count)
    ]
    for info in sent:  # each PUBACKed: in Redis, on its way to node 0
        info.wait_for_publish(10)
    # The old connection holds 10 unacknowledged and node 0 queues the rest.
    new = clients.connect(nodes[2], "walker", clean=False, session_expiry=EXPIRY)
    assert new.session_present[-1] is True
    while (packet := old.recv_or_close()) is not None and packet.name != "DISCONNECT":
        pass
    assert packet is not None and packet.reason_code == 0x8E  # Session taken over
    wait_until(lambda: len(_steps(new)) >= count, timeout=30, what="every queued message")
    steps = _steps(new)
    first_seen = list(dict.fromkeys(steps))
    assert first_seen == list(range(count))  # none lost, in order
    assert len(steps) - count <= 10  # only the unacknowledged ones come twice
    old.drop()


def test_a_session_resumes_on_another_node_with_what_arrived_while_offline(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(2)
    first = clients.connect(nodes[0], "sleeper", clean=False, session_expiry=EXPIRY)
    first.sub("news/#", qos=1)
    wait_routed(clients, nodes[1], first, "news/probe")
    first.stop()
    publisher = clients.connect(nodes[1], "paper")
    for number in range(50):
        publisher.pub("news/today", f"n{number}".encode(), qos=1)
    again = clients.connect(nodes[1], "sleeper", clean=False, session_expiry=EXPIRY)
    assert again.session_present[-1] is True
    wait_until(lambda: len(_news(again)) >= 50, what="the news")
    assert _news(again) == [f"n{number}".encode() for number in range(50)]
    # The session lives on node 1 now: a message published on node 0 reaches it.
    wait_routed(clients, nodes[0], again, "news/probe2")


def _steps(conn: object) -> list[int]:
    return [int(p) for p in conn.payloads() if p != b"probe"]  # type: ignore[attr-defined]


def _news(conn: object) -> list[bytes]:
    return [p for p in conn.payloads() if p.startswith(b"n")]  # type: ignore[attr-defined]
