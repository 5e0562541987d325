"""Flow control between nodes: a burst published on one node reaches a subscriber on another
that keeps up, whole and in order, with the default queue limits; a subscriber that never
acknowledges fills its own queue (drops counted, as on one node) without holding back the
others. Real node processes, a real Valkey, raw MQTT clients."""

from __future__ import annotations

import multiprocessing
import re
import threading
import urllib.request
from collections.abc import Callable
from multiprocessing.process import BaseProcess

from brokerproc import BrokerProcess
from clusterproc import Cluster, wait_for_log
from paho_helpers import wait_until
from rawmqtt import Pkt, RawClient, RawFactory, publish_bytes

PROBE_TOPIC = "flow/probe"
WINDOW = 500  # QoS 1 PUBLISHes the publisher keeps unacknowledged
QOS0_PADDING = 2000  # bytes after the number in a QoS 0 message's payload
QUIET = 10  # seconds without a message after which a subscriber stops waiting
METRICS_PORT = re.compile(r"http listening on [\d.]+:(\d+)")
QUEUE_FULL = re.compile(r'roost_deliveries_dropped_total\{reason="queue_full"\} (\d+)')


def publish_windowed(host: str, port: int, topic: str, count: int) -> None:
    """Connect as ``publisher`` and publish ``count`` QoS 1 messages ``n`` (payload
    ``b"n"``), keeping up to WINDOW of them unacknowledged: as PUBACKs come in, as many new
    PUBLISHes go out in one write. Run in a process of its own (see :func:`publisher`)."""
    client = RawClient(host, port)
    connack = client.connect("publisher")
    assert connack is not None and connack.name == "CONNACK", connack
    packets = [
        publish_bytes(topic.encode(), str(n).encode(), 4, 1, n % 65535 + 1) for n in range(count)
    ]
    sent = acked = 0
    while acked < count:
        room = min(WINDOW - (sent - acked), count - sent)
        if room:
            client.send(b"".join(packets[sent : sent + room]))
            sent += room
        packet = client.recv(30)
        while packet is not None:
            assert packet.name == "PUBACK", packet
            acked += 1
            packet = client.parse_buffered()
    client.drop()


def publish_at_once(host: str, port: int, topic: str, count: int) -> None:
    """Connect as ``publisher``, send ``count`` QoS 0 messages ``n`` (payload ``b"n"``) in
    one write, and wait until the node has read them all (its PINGRESP comes after)."""
    client = RawClient(host, port)
    connack = client.connect("publisher")
    assert connack is not None and connack.name == "CONNACK", connack
    padding = b" " * QOS0_PADDING
    packets = (publish_bytes(topic.encode(), str(n).encode() + padding, 4) for n in range(count))
    client.send(b"".join(packets))
    client.ping()
    client.drop()


def publisher(
    node: BrokerProcess, topic: str, count: int, publish: Callable[..., None] = publish_windowed
) -> BaseProcess:
    """``publish`` (:func:`publish_windowed`, QoS 1) in a process of its own, as fast as it
    goes (not slowed by the subscriber threads of the test process); started."""
    process = multiprocessing.get_context("spawn").Process(
        target=publish, args=(node.host, node.port, topic, count)
    )
    process.start()
    return process


class AckingSubscriber(threading.Thread):
    """Reads everything a raw subscriber is sent and acknowledges each QoS 1 message as
    soon as it is read (the PUBACKs of one read in one write), until ``count`` payloads
    arrived or nothing came for QUIET seconds; probes (late ones of :func:`wait_routed`)
    are not counted."""

    def __init__(self, client: RawClient, count: int) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.count = count
        self.payloads: list[bytes] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        client = self.client
        try:
            while len(self.payloads) < self.count:
                packet: Pkt | None = client.recv_or_close(QUIET)
                if packet is None:
                    return  # closed by the node: the test compares what arrived
                acks = []
                while packet is not None:
                    if packet.name == "PUBLISH":
                        if packet.topic != PROBE_TOPIC:
                            self.payloads.append(packet.payload)
                        if packet.qos:
                            acks.append(ack_bytes(packet.packet_id))
                    packet = client.parse_buffered()
                client.send(b"".join(acks))
        except AssertionError:
            return  # quiet: the test compares what arrived
        except BaseException as exc:  # reported by the test's thread
            self.error = exc


def ack_bytes(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id.to_bytes(2, "big")


def subscribed(raw: RawFactory, node: BrokerProcess, client_id: str, topic: str) -> RawClient:
    client, _ = raw.connected(node, client_id)
    suback = client.subscribe(1, [(topic, 1)])
    assert suback.reason_codes == [1]
    return client


def wait_routed(
    raw: RawFactory, publisher_node: BrokerProcess, subscribers: list[RawClient]
) -> None:
    """Probe PROBE_TOPIC (QoS 0) from ``publisher_node`` until every subscriber got one: the
    route is known on the publisher's node."""
    probe, _ = raw.connected(publisher_node, "probe")
    reached: set[int] = set()

    def probed() -> bool:
        probe.publish(PROBE_TOPIC, b"probe")
        for index, subscriber in enumerate(subscribers):
            if any(packet.name == "PUBLISH" for packet in subscriber.until_pingresp()):
                reached.add(index)
        return len(reached) == len(subscribers)

    wait_until(probed, what="the subscriptions to reach the publisher's node")
    probe.disconnect()
    probe.drop()


def burst_reaches(
    subscriber: RawClient,
    a: BrokerProcess,
    b: BrokerProcess,
    count: int,
    publish: Callable[..., None] = publish_windowed,
) -> None:
    """``count`` messages published on node ``a`` by ``publish`` (QoS 1, WINDOW of them
    unacknowledged, unless told otherwise) reach ``subscriber`` (on ``b``, acking each at
    once) whole and in order."""
    receiver = AckingSubscriber(subscriber, count)
    receiver.start()
    sending = publisher(a, "flow/burst", count, publish)
    receiver.join(120)
    sending.join(30)
    assert sending.exitcode == 0
    assert receiver.error is None, receiver.error
    assert len(receiver.payloads) == count, (queue_full_drops(a), queue_full_drops(b))
    numbers = [payload.rstrip(b" ") for payload in receiver.payloads]  # without padding
    assert numbers == [str(n).encode() for n in range(count)]


def queue_full_drops(node: BrokerProcess) -> int:
    """The node's count of deliveries dropped because a session's queue was full (metrics)."""
    port = METRICS_PORT.search("".join(node.log))
    assert port is not None, "the node has no HTTP listener"
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/metrics", timeout=10) as page:
        found = QUEUE_FULL.search(page.read().decode())
    assert found is not None
    return int(found.group(1))


def logged_drops(node: BrokerProcess, client_id: str) -> int:
    """Messages the node's "queue full" log lines say it dropped for ``client_id``."""
    return sum(int(n) for n in re.findall(rf"\b{client_id}: (\d+)", "".join(node.log)))


def test_a_burst_from_another_node_reaches_a_prompt_subscriber_whole_and_in_order(
    cluster: Cluster, raw: RawFactory
) -> None:
    count = 20_000
    a, b = cluster.start(2, "--http-port", "0")  # default max_inflight and queue limits
    subscriber = subscribed(raw, b, "prompt", "flow/#")
    wait_routed(raw, a, [subscriber])
    burst_reaches(subscriber, a, b, count)
    for node in (a, b):
        assert queue_full_drops(node) == 0
        assert "queue full" not in "".join(node.log)


def test_a_qos0_burst_from_another_node_reaches_a_prompt_subscriber_whole_and_in_order(
    cluster: Cluster, raw: RawFactory
) -> None:
    """As on one node, where a publisher is read a few hundred packets per loop turn: the
    burst arrives in entries of thousands, which are handed over no faster than the
    subscriber's queue empties, so none is dropped."""
    count = 20_000
    # default queue limits; the subscriber may hold the inbox back for as long as the
    # test takes (a loaded machine reads the 40 MB slowly)
    a, b = cluster.start(2, "--http-port", "0", "--inbox-hold-ms", "600000")
    subscriber = subscribed(raw, b, "prompt", "flow/#")
    wait_routed(raw, a, [subscriber])
    burst_reaches(subscriber, a, b, count, publish_at_once)
    assert queue_full_drops(b) == 0


def test_a_stuck_subscriber_fills_its_own_queue_and_does_not_hold_back_another(
    cluster: Cluster, raw: RawFactory
) -> None:
    count = 5_000
    inflight, queued = 100, 1000
    a, b = cluster.start(
        2,
        "--http-port", "0",
        "--max-inflight", str(inflight),
    )  # fmt: skip
    stuck = subscribed(raw, b, "stuck", "flow/#")  # reads nothing from now on
    prompt = subscribed(raw, b, "prompt", "flow/#")
    wait_routed(raw, a, [stuck, prompt])
    burst_reaches(prompt, a, b, count)
    wait_for_log(b, "client stuck does not keep up")
    # As on one node: what fits in its inflight window and its queue waits, the rest is
    # dropped by the queue-full policy, counted and logged.
    assert queue_full_drops(b) == count - inflight - queued
    wait_until(
        lambda: logged_drops(b, "stuck") == count - inflight - queued,
        timeout=15,  # the log reports drops every 10 s at most
        what="the drops in the log",
    )


def test_a_node_holds_back_acknowledgements_while_the_inbox_it_sends_to_is_long(
    cluster: Cluster, raw: RawFactory
) -> None:
    # Node n1's subscriber takes one message in flight and queues two, then stops reading;
    # it may hold n1's inbox back for as long as the test runs.
    limit = 10
    a, b = cluster.start(
        2,
        "--max-inflight", "1",
        "--max-queued-messages", "4",
        "--inbox-hold-ms", "600000",
        "--inbox-max-entries", str(limit),
    )  # fmt: skip
    stuck = subscribed(raw, b, "stuck", "flow/#")
    wait_routed(raw, a, [stuck])
    publisher, _ = raw.connected(a, "publisher")
    held_at = None
    for n in range(1, 4 * limit):  # one at a time: each is an inbox entry of its own
        publisher.publish("flow/one", str(n).encode(), qos=1, packet_id=n)
        try:
            publisher.expect("PUBACK", timeout=1.5)
        except AssertionError:
            held_at = n
            break
    # Messages 4... wait in n1's inbox; once it is over the limit, PUBACK waits.
    assert held_at is not None and held_at > limit, held_at
    wait_for_log(a, "the inbox of node n1 holds")
    stuck.abort()  # its session ends: n1 reads its inbox again, and n0 hears it is short
    assert publisher.expect("PUBACK", timeout=10).packet_id == held_at
    wait_for_log(a, "the inbox of node n1 is down to")
