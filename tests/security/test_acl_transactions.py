"""Rights on transactions (docs/acl.md, "Transactions"): sending half messages for a
producer group, deciding its transactions and receiving its check requests are plain
topic rights on ``$tx/prepare/G``, ``$tx/commit/G`` ... and ``$tx/check/G``."""

from __future__ import annotations

import pytest

from aclclients import broker_with_acl, connect_as, publish_code
from paho_helpers import wait_until

NOT_AUTHORIZED = 0x87

ACL = """\
user producer
topic write orders/#
topic readwrite $tx/+/orders

user intruder
topic write orders/#
topic write $tx/prepare/billing
topic write $tx/commit/billing
topic read $tx/check/billing

user consumer
topic read orders/#
"""


@pytest.fixture
def acl_broker(make_broker, tmp_path):
    return broker_with_acl(make_broker, tmp_path, ACL)


def half(transaction_id, group="orders"):
    return [("roost-tx-id", transaction_id), ("roost-tx-group", group)]


def test_only_a_client_with_the_right_sends_half_messages_for_a_group(acl_broker, clients):
    producer = connect_as(clients, acl_broker, "producer", "p")
    intruder = connect_as(clients, acl_broker, "intruder", "i")
    pending = acl_broker.broker.core.transactions.pending
    assert publish_code(intruder, "orders/paid", b"x", 1, user_properties=half("T1")) == (
        NOT_AUTHORIZED
    )
    assert "T1" not in pending
    # the group right is not enough without the right to write the message's topic
    assert publish_code(producer, "bills/x", b"x", 1, user_properties=half("T2")) == (
        NOT_AUTHORIZED
    )
    assert publish_code(producer, "orders/paid", b"x", 1, user_properties=half("T3")) == 0
    assert "T3" in pending
    # the intruder's own group works for it
    assert (
        publish_code(intruder, "orders/paid", b"x", 1, user_properties=half("T4", "billing")) == 0
    )


def test_only_a_client_with_the_right_decides_a_groups_transactions(acl_broker, clients):
    producer = connect_as(clients, acl_broker, "producer", "p")
    intruder = connect_as(clients, acl_broker, "intruder", "i")
    consumer = connect_as(clients, acl_broker, "consumer", "c")
    assert consumer.sub("orders/#", 1) == [1]
    assert publish_code(producer, "orders/paid", b"order 1", 1, user_properties=half("T1")) == 0
    pending = acl_broker.broker.core.transactions.pending
    for decision in ("commit", "rollback", "unknown"):
        assert publish_code(intruder, f"$tx/{decision}", b"T1", 1) == NOT_AUTHORIZED
    assert "T1" in pending
    assert publish_code(producer, "$tx/commit", b"T1", 1) == 0
    assert consumer.wait_for_payload(b"order 1").topic == "orders/paid"
    assert "T1" not in pending
    # an id the broker does not hold needs the right over every group
    assert publish_code(producer, "$tx/commit", b"no such id", 1) == NOT_AUTHORIZED


def test_only_a_client_with_the_right_joins_a_group_and_gets_its_checks(
    make_broker, tmp_path, clients, clock
):
    broker = broker_with_acl(make_broker, tmp_path, ACL, clock=clock, transaction_timeout=5)
    intruder = connect_as(clients, broker, "intruder", "i")
    assert intruder.sub("$tx/check/orders", 1) == [NOT_AUTHORIZED]
    assert intruder.sub("$tx/check/+", 1) == [NOT_AUTHORIZED]
    assert intruder.sub("$tx/check/billing", 1) == [1]
    producer = connect_as(clients, broker, "producer", "p")
    assert producer.sub("$tx/check/orders", 1) == [1]
    assert publish_code(producer, "orders/paid", b"order 2", 1, user_properties=half("T9")) == 0
    broker.advance(5)
    check = producer.wait_for_payload(b"order 2")
    assert check.topic == "$tx/check/orders"
    wait_until(lambda: broker.broker.core.transactions.counters.checks_sent == 1)
