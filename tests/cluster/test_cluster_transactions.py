"""Transactional messages across nodes: a half message prepared on node A is decided on
node B and checked back with a member of its group on node C."""

from __future__ import annotations

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from clusterproc import Cluster, wait_routed
from paho_helpers import Clients, Conn, wait_until

CHECKS = ("--transaction-timeout", "1", "--transaction-check-interval", "1")


def half(transaction_id: str, group: str = "orders") -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.UserProperty = [("roost-tx-id", transaction_id), ("roost-tx-group", group)]
    return properties


def checks_for(checker: Conn, transaction_id: str) -> list[object]:
    return [
        message
        for message in checker.messages
        if message.topic == "$tx/check/orders" and message.payload == transaction_id.encode()
    ]


def test_prepared_on_one_node_checked_on_another_and_committed_on_a_third(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3, *CHECKS)
    consumer = clients.connect(nodes[2], "consumer")
    consumer.sub("orders/#", qos=1)
    wait_routed(clients, nodes[0], consumer, "orders/probe")
    checker = clients.connect(nodes[2], "checker")
    checker.sub("$tx/check/orders", qos=1)
    producer = clients.connect(nodes[0], "producer")
    producer.pub("orders/new", b"t1", qos=1, properties=half("t1"))
    # Not delivered before the decision; checked back on node 2, where the member is.
    wait_until(lambda: checks_for(checker, "t1"), what="a check-back of t1 on node 2")
    assert b"t1" not in consumer.payloads()
    decider = clients.connect(nodes[1], "decider")
    decider.pub("$tx/commit", b"t1", qos=1)
    message = consumer.wait_for_payload(b"t1")
    assert message.topic == "orders/new"
    # A repeated decision on yet another node is answered as settled, not applied twice.
    late = clients.connect(nodes[2], "late")
    late.pub("$tx/commit", b"t1", qos=1)
    assert consumer.payloads().count(b"t1") == 1


def test_a_decision_right_after_the_prepare_on_another_node_is_applied(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(2, *CHECKS)
    consumer = clients.connect(nodes[1], "consumer")
    consumer.sub("orders/#", qos=1)
    wait_routed(clients, nodes[0], consumer, "orders/probe")
    producer = clients.connect(nodes[0], "producer")
    decider = clients.connect(nodes[1], "decider")
    for number in range(20):
        transaction_id = f"fast{number}"
        producer.pub("orders/new", transaction_id.encode(), qos=1, properties=half(transaction_id))
        decider.pub("$tx/commit" if number % 2 else "$tx/rollback", transaction_id.encode(), qos=1)
    committed = [f"fast{number}".encode() for number in range(1, 20, 2)]
    wait_until(lambda: all(p in consumer.payloads() for p in committed), what="the commits")
    assert not [p for p in consumer.payloads() if p.startswith(b"fast") and p not in committed]


def test_a_pending_transaction_of_a_killed_node_is_decided_on_a_survivor(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3, *CHECKS)
    consumer = clients.connect(nodes[2], "consumer")
    consumer.sub("orders/#", qos=1)
    wait_routed(clients, nodes[1], consumer, "orders/probe")
    producer = clients.connect(nodes[0], "producer")
    producer.pub("orders/new", b"orphan", qos=1, properties=half("orphan"))
    nodes[0].kill()
    wait_until(
        lambda: "pending transactions of node n0" in "".join(nodes[1].log + nodes[2].log),
        what="a survivor to hold the transaction",
    )
    decider = clients.connect(nodes[1], "decider")
    decider.pub("$tx/commit", b"orphan", qos=1)
    assert consumer.wait_for_payload(b"orphan").topic == "orders/new"
