"""MQTT 5 Message Expiry across nodes: a message relayed to another node and queued there
for an offline session expires on time, and one delivered later carries what is left of
its interval [MQTT-3.3.2-5, -6]; retained messages relayed to other nodes (or read from
Redis by a node that starts later) expire too. Real node processes keep real time: the
tests let the short intervals pass."""

from __future__ import annotations

import time
import uuid

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from clusterproc import Cluster, wait_routed, without_probes
from paho_helpers import Clients, Conn
from rawmqtt import RawFactory

SHORT = 1  # seconds: expires while the test waits
LONG = 60
WAITED = SHORT + 1.5  # what the test lets pass: the short interval and some rounding


def expiring(seconds: int) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.MessageExpiryInterval = seconds
    return properties


def expiry_of(message: object) -> int | None:
    return getattr(getattr(message, "properties", None), "MessageExpiryInterval", None)


def probe(message: object) -> bool:
    return not without_probes([getattr(message, "payload", b"")])


def let_pass(since: float, seconds: float) -> None:
    """Let ``seconds`` of real time pass since ``since`` (time.monotonic()): the subject of
    these tests, kept by node processes whose clocks cannot be advanced."""
    time.sleep(max(0.0, since + seconds - time.monotonic()))


def offline_on(
    clients: Clients, node: object, publisher_node: object, topic_filter: str, probe_topic: str
) -> None:
    """Persistent session "exp" subscribed to ``topic_filter`` at QoS 1, routed to from
    ``publisher_node`` (probes on ``probe_topic``) and offline on ``node``: what comes for
    it is queued there."""
    watcher = clients.connect(node, "watcher")
    watcher.sub("$SYS/roost/clients/exp/disconnected")
    subscriber = clients.connect(node, "exp", clean=False, session_expiry=300)
    subscriber.sub(topic_filter, qos=1)
    wait_routed(clients, publisher_node, subscriber, probe_topic)
    subscriber.stop()
    watcher.wait_for_messages(1)


def received_before_marker(clients: Clients, node: object, subscriber: Conn, topic: str) -> list:
    """What ``subscriber`` got before a marker published on ``topic`` from ``node``."""
    clients.connect(node, f"marker-{uuid.uuid4().hex[:8]}").pub(topic, b"marker", qos=1)
    subscriber.wait_for_payload(b"marker")
    return subscriber.before(b"marker")


def test_a_message_queued_on_another_node_expires_there_and_the_rest_waits_less(
    cluster: Cluster, clients: Clients
) -> None:
    a, b = cluster.start(2)
    offline_on(clients, b, a, "e/#", "e/probe")
    publisher = clients.connect(a, "publisher")
    published = time.monotonic()
    publisher.pub("e/t", b"short", qos=1, properties=expiring(SHORT))
    publisher.pub("e/t", b"long", qos=1, properties=expiring(LONG))
    publisher.pub("e/t", b"none", qos=1)
    let_pass(published, WAITED)
    resumed = clients.connect(b, "exp", clean=False, session_expiry=300)
    assert resumed.session_present == [True]
    got = [m for m in received_before_marker(clients, a, resumed, "e/t") if not probe(m)]
    assert [m.payload for m in got] == [b"long", b"none"]
    waited = time.monotonic() - published
    # The interval sent on is what is left: decremented by the time it waited (whole
    # seconds, rounded up, as on one node).
    assert LONG - waited - 1 <= expiry_of(got[0]) <= LONG - (WAITED - 1), expiry_of(got[0])
    assert expiry_of(got[1]) is None


def test_the_time_a_message_waits_in_a_nodes_inbox_counts_toward_its_expiry(
    cluster: Cluster, clients: Clients, raw: RawFactory
) -> None:
    # b reads its inbox only as fast as "stuck" takes messages: one in flight, two queued,
    # then never; it may hold the inbox back for as long as the test runs.
    a, b = cluster.start(
        2, "--max-inflight", "1", "--max-queued-messages", "4", "--inbox-hold-ms", "600000"
    )
    offline_on(clients, b, a, "e/t", "e/t")
    stuck, _ = raw.connected(b, "stuck")
    assert stuck.subscribe(1, [("e/fill", 1)]).reason_codes == [1]
    publisher = clients.connect(a, "publisher")
    for number in range(4):  # stuck's window and queue fill: b stops reading its inbox
        publisher.pub("e/fill", f"fill{number}".encode(), qos=1)
    published = time.monotonic()
    publisher.pub("e/t", b"short", qos=1, properties=expiring(SHORT))
    publisher.pub("e/t", b"long", qos=1, properties=expiring(LONG))
    let_pass(published, WAITED)  # both wait in b's inbox; the short one expires there
    stuck.abort()  # its session ends: b reads its inbox again
    resumed = clients.connect(b, "exp", clean=False, session_expiry=300)
    got = [m for m in received_before_marker(clients, a, resumed, "e/t") if not probe(m)]
    assert [m.payload for m in got] == [b"long"]
    assert expiry_of(got[-1]) <= LONG - (WAITED - 1), expiry_of(got[-1])


def test_a_retained_message_expires_on_every_node(cluster: Cluster, clients: Clients) -> None:
    a, b = cluster.start(2)
    live = clients.connect(b, "live")
    live.sub("r/#", qos=1)
    wait_routed(clients, a, live, "r/probe")
    publisher = clients.connect(a, "publisher")
    published = time.monotonic()
    publisher.pub("r/short", b"short", qos=1, retain=True, properties=expiring(SHORT))
    publisher.pub("r/long", b"long", qos=1, retain=True, properties=expiring(LONG))
    live.wait_for_payload(b"long")  # b has both retained messages now
    let_pass(published, WAITED)
    late = cluster.add_node("n2")  # reads the retained messages from Redis
    cluster.wait_all_joined()
    for node in (a, b, late):
        reader = clients.connect(node, f"reader-{cluster.node_id_of(node)}")
        reader.sub("r/#", qos=1)
        got = received_before_marker(clients, node, reader, "r/marker")
        assert [m.payload for m in got if m.retain] == [b"long"], cluster.node_id_of(node)
        assert expiry_of(got[0]) <= LONG - (WAITED - 1), expiry_of(got[0])
