"""Retained messages, wills and session expiry behave cluster-wide as on one node."""

from __future__ import annotations

from itertools import count
from typing import Any

import redis

from clusterproc import Cluster, wait_routed
from paho_helpers import Clients, wait_until
from rawmqtt import RawClient, Will


def retained_on(node: Any, topic: str, client_id: str) -> list[bytes]:
    """What a new subscriber on ``node`` gets as retained on ``topic``: the broker sends
    them right after SUBACK, so all of them precede the answer to a later PINGREQ."""
    raw = RawClient(node.host, node.port, version=5)
    try:
        raw.connect(client_id)
        raw.subscribe(1, [(topic, 1)])
        return [packet.payload for packet in raw.until_pingresp() if packet.retain]
    finally:
        raw.drop()


def eventually_retained(node: Any, topic: str, expected: list[bytes]) -> None:
    attempts = count()
    wait_until(
        lambda: retained_on(node, topic, f"checker{next(attempts)}") == expected,
        what=f"retained {expected} on {topic}",
    )


def test_retained_messages_are_kept_cluster_wide_and_cleared_from_any_node(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3)
    setter = clients.connect(nodes[0], "setter")
    setter.pub("config/mode", b"eco", qos=1, retain=True)
    eventually_retained(nodes[2], "config/#", [b"eco"])
    late = cluster.add_node("n3")  # started afterwards: reads them from Redis
    cluster.wait_all_joined()
    eventually_retained(late, "config/#", [b"eco"])
    clearer = clients.connect(nodes[1], "clearer")
    clearer.pub("config/mode", b"", qos=1, retain=True)
    for node in (nodes[0], nodes[2], late):
        eventually_retained(node, "config/#", [])


def test_a_will_reaches_subscribers_on_other_nodes(cluster: Cluster, clients: Clients) -> None:
    nodes = cluster.start(2)
    watcher = clients.connect(nodes[1], "watcher")
    watcher.sub("presence/#", qos=1)
    wait_routed(clients, nodes[0], watcher, "presence/probe")
    mortal = RawClient(nodes[0].host, nodes[0].port, version=5)
    mortal.connect("mortal", will=Will("presence/mortal", b"offline", qos=1))
    mortal.abort()  # a network failure, not a DISCONNECT
    message = watcher.wait_for_payload(b"offline")
    assert message.topic == "presence/mortal"
    assert len(watcher.by_payload(b"offline")) == 1


def test_a_session_expires_once_cluster_wide(cluster: Cluster, clients: Clients) -> None:
    nodes = cluster.start(2)
    brief = clients.connect(nodes[0], "brief", clean=False, session_expiry=1)
    brief.sub("brief/#", qos=1)
    brief.stop()
    store = redis.Redis.from_url(cluster.redis_server.url)
    wait_until(
        lambda: not store.exists("roost:{c:brief}:session"),
        what="the session to expire and leave Redis",
    )
    store.close()
    again = clients.connect(nodes[1], "brief", clean=False, session_expiry=60)
    assert again.session_present[-1] is False
