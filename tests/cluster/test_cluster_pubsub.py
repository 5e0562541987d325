"""Messages cross nodes: QoS 0/1/2 with wildcards, per-publisher order across nodes and
QoS, shared subscriptions spanning nodes. Real node processes, a real Valkey, paho."""

from __future__ import annotations

import threading
from collections import Counter

from clusterproc import Cluster, wait_routed, without_probes
from paho_helpers import Clients, wait_until


def test_a_message_reaches_subscribers_on_every_node_at_each_qos(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3)
    subscribers = []
    for index, node in enumerate(nodes):
        subscriber = clients.connect(node, f"sub{index}")
        subscriber.sub("sensors/+/temp", qos=2)
        subscriber.sub("sensors/#", qos=2)
        subscribers.append(subscriber)
    for subscriber in subscribers:
        wait_routed(clients, nodes[0], subscriber, "sensors/probe")
    publisher = clients.connect(nodes[0], "pub")
    for qos in (0, 1, 2):
        publisher.pub("sensors/kitchen/temp", f"q{qos}".encode(), qos=qos)
    for subscriber in subscribers:
        for qos in (0, 1, 2):
            message = subscriber.wait_for_payload(f"q{qos}".encode())
            assert message.qos == qos
            assert message.topic == "sensors/kitchen/temp"
        # Two matching filters on one node: one copy per subscriber [MQTT-3.3.4-2].
        wait_until(lambda s=subscriber: len(without_probes(s.payloads())) >= 3)
        assert Counter(without_probes(subscriber.payloads())) == {b"q0": 1, b"q1": 1, b"q2": 1}


def test_three_publishers_on_three_nodes_keep_their_order_at_every_subscriber(
    cluster: Cluster, clients: Clients
) -> None:
    count = 1000
    # Room for the whole burst: a full queue would drop QoS 0 messages by design.
    nodes = cluster.start(3, "--max-queued-messages", str(4 * count))
    subscribers = [clients.connect(node, f"sub{index}") for index, node in enumerate(nodes)]
    for subscriber in subscribers:
        subscriber.sub("order/#", qos=1)  # QoS <= 1: paho hands them over in arrival order
    for node in nodes:
        for subscriber in subscribers:
            wait_routed(clients, node, subscriber, "order/probe")
    publishers = [clients.connect(node, f"pub{index}") for index, node in enumerate(nodes)]

    def burst(index: int) -> None:
        client = publishers[index].client
        last = None
        for number in range(count):
            last = client.publish(f"order/p{index}", f"p{index}-{number}", qos=number % 3)
        assert last is not None
        last.wait_for_publish(30)

    threads = [threading.Thread(target=burst, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for subscriber in subscribers:
        wait_until(
            lambda s=subscriber: len(without_probes(s.payloads())) >= 3 * count,
            timeout=30,
            what="every message",
        )
        received = without_probes(subscriber.payloads())
        for index in range(3):
            mine = [p for p in received if p.startswith(f"p{index}-".encode())]
            assert mine == [f"p{index}-{number}".encode() for number in range(count)]


def test_a_shared_group_spanning_nodes_gets_each_message_once(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3)
    members = [clients.connect(node, f"member{index}") for index, node in enumerate(nodes)]
    for member in members:
        member.sub("$share/workers/jobs", qos=1)
    watcher = clients.connect(nodes[1], "watcher")
    watcher.sub("jobs", qos=1)
    publisher = clients.connect(nodes[0], "boss")
    # Node 0 knows the group on every node once probes reach every member.
    number = 0
    while not all(member.messages for member in members):
        publisher.pub("jobs", f"probe-{number}".encode(), qos=1)
        number += 1
        assert number < 2000, "the group's members on other nodes never got a message"
    total = 300
    for number in range(total):
        publisher.pub("jobs", f"job-{number}".encode(), qos=1)
    watcher_jobs = lambda: [p for p in watcher.payloads() if p.startswith(b"job-")]  # noqa: E731
    wait_until(lambda: len(watcher_jobs()) == total, what="the watcher to see every job")

    def jobs_of(member: object) -> list[bytes]:
        return [p for p in member.payloads() if p.startswith(b"job-")]  # type: ignore[attr-defined]

    wait_until(
        lambda: sum(len(jobs_of(member)) for member in members) >= total,
        what="every job to reach a member",
    )
    delivered = [job for member in members for job in jobs_of(member)]
    assert sorted(delivered) == sorted(f"job-{n}".encode() for n in range(total))
    for member in members:  # spread over the nodes, not all on one
        assert len(jobs_of(member)) >= total // 6


def test_a_subscription_on_a_node_that_just_joined_is_routed_at_once(
    cluster: Cluster, clients: Clients
) -> None:
    """Node n0 learns of n1 from its periodic read of the members (every 10 s here) and
    then follows n1's route announcements: the first of them is read at once, not when a
    listener that followed nobody before wakes up again (up to 10 s later)."""
    first, second = cluster.start(2, "--node-timeout-ms", "40000")
    subscriber = clients.connect(second, "sub")
    subscriber.sub("fresh/#")
    wait_routed(clients, first, subscriber, "fresh/probe", timeout=2.0)
