"""Shared subscriptions ``$share/{group}/{filter}``: each message goes to exactly one member
of each group; ordinary subscribers are unaffected (MQTT 5.0 section 4.8.2).

Members also hold an ordinary subscription to ``ctl/marker``; a marker published after the
messages by the same publisher shows that nothing else is on its way."""

from __future__ import annotations

import pytest

from paho_helpers import V5, V311

COUNT = 100


def member(clients, broker, client_id, share, version=V5, qos=1):
    m = clients.connect(broker, client_id, version)
    assert m.sub(share, qos) == [qos]
    assert m.sub("ctl/marker", 1) == [1]
    return m


def publish_all(clients, broker, topic="sh/t", count=COUNT):
    p = clients.connect(broker, "pub", V5)
    for i in range(count):
        p.pub(topic, str(i).encode(), 1)
    p.pub("ctl/marker", b"marker", 1)
    return p


def received(conn):
    conn.wait_for_payload(b"marker")
    return [int(m.payload) for m in conn.before(b"marker")]


@pytest.mark.parametrize("version", [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")])
def test_each_message_to_exactly_one_group_member(broker, clients, version):
    a = member(clients, broker, "ma", "$share/g/sh/t", version)
    b = member(clients, broker, "mb", "$share/g/sh/t", version)
    normal = member(clients, broker, "normal", "sh/t", version)
    publish_all(clients, broker)
    got_a, got_b = received(a), received(b)
    union = sorted(got_a + got_b)
    assert union == list(range(COUNT)), (
        f"group: {len(got_a)} + {len(got_b)} messages, missing "
        f"{sorted(set(range(COUNT)) - set(union))[:10]}, duplicated "
        f"{sorted(x for x in set(union) if union.count(x) > 1)[:10]}"
    )
    assert received(normal) == list(range(COUNT))
    for m in a.messages + b.messages:
        if m.payload != b"marker":
            assert m.topic == "sh/t", "a shared delivery carries the real topic name"


def test_messages_are_spread_over_members(broker, clients):
    """Load balancing: with 100 messages and 2 members, both members get some."""
    a = member(clients, broker, "ma", "$share/g/sh/t")
    b = member(clients, broker, "mb", "$share/g/sh/t")
    publish_all(clients, broker)
    got_a, got_b = received(a), received(b)
    assert got_a and got_b, f"all messages went to one member: {len(got_a)} / {len(got_b)}"
    # Within one member, messages keep the publisher's order.
    assert got_a == sorted(got_a) and got_b == sorted(got_b)


def test_two_groups_each_get_every_message(broker, clients):
    g1 = [member(clients, broker, f"g1m{i}", "$share/g1/sh/#") for i in range(2)]
    g2 = [member(clients, broker, f"g2m{i}", "$share/g2/sh/+") for i in range(2)]
    publish_all(clients, broker)
    for group in (g1, g2):
        union = sorted(received(group[0]) + received(group[1]))
        assert union == list(range(COUNT))


def test_shared_and_ordinary_subscription_in_one_client(broker, clients):
    """A client with both an ordinary and a shared subscription matching gets the ordinary
    copy of every message, and a second copy whenever the group picks it (MQTT 5.0 section
    4.8.2: "A second copy of the message will be delivered to one of the subscribers to the
    Shared Subscription, and this could result in a second copy being sent to this Client")."""
    both = member(clients, broker, "both", "$share/g/sh/t")
    assert both.sub("sh/t", 1) == [1]
    other = member(clients, broker, "other", "$share/g/sh/t")
    publish_all(clients, broker, count=20)
    mine, theirs = received(both), received(other)
    for i in range(20):
        assert mine.count(i) + theirs.count(i) in (1, 2)
        assert i in mine
    assert sorted(set(mine) - set(range(20))) == []
    shared_copies = len(mine) - 20 + len(theirs)
    assert shared_copies == 20, f"{shared_copies} shared copies for 20 messages"


def test_member_leaving_sends_everything_to_the_rest(broker, clients):
    a = member(clients, broker, "ma", "$share/g/sh/t")
    b = member(clients, broker, "mb", "$share/g/sh/t")
    assert b.unsub("$share/g/sh/t") == [0]
    p = publish_all(clients, broker, count=30)
    assert received(a) == list(range(30))
    assert received(b) == []
    # A member that disconnects (clean session) is also out of the group.
    a.stop()
    c = member(clients, broker, "mc", "$share/g/sh/t")
    for i in range(30, 40):
        p.pub("sh/t", str(i).encode(), 1)
    p.pub("ctl/marker", b"marker", 1)
    assert received(c) == list(range(30, 40))


def test_retained_messages_not_sent_to_new_shared_subscription(broker, clients):
    """Retained messages go to new Non-shared Subscriptions only (MQTT 5.0 section 3.3.1.3)."""
    p = clients.connect(broker, "pub", V5)
    p.pub("sh/t", b"retained", 1, retain=True)
    a = member(clients, broker, "ma", "$share/g/sh/t")
    p.pub("ctl/marker", b"marker", 1)
    assert received(a) == []


def test_shared_subscription_qos_downgrade(broker, clients):
    a = member(clients, broker, "ma", "$share/g/sh/t", qos=0)
    p = clients.connect(broker, "pub", V5)
    p.pub("sh/t", b"q2", 2)
    assert a.wait_for_payload(b"q2").qos == 0


def test_shared_subscriptions_not_available(make_broker, clients):
    """shared_subscription_available=False: CONNACK says so and SUBACK answers 0x9E."""
    broker = make_broker(shared_subscription_available=False)
    c = clients.connect(broker, "c", V5)
    assert getattr(c.connack_props, "SharedSubscriptionAvailable", None) == 0
    assert c.sub("$share/g/sh/t", 1) == [0x9E]


def test_shared_subscription_no_local_is_protocol_error(broker, raw):
    """No Local = 1 on a shared subscription is a Protocol Error [MQTT-3.8.3-4]."""
    c, _ = raw.connected(broker, "nl", 5)
    c.send(
        bytes([0x82, 19, 0, 1, 0])  # SUBSCRIBE, id 1, no properties
        + b"\x00\x0d$share/g/sh/t"
        + bytes([0x04 | 1])  # No Local + QoS 1
    )
    closing = c.wait_closed()
    assert [pk.reason_code for pk in closing if pk.name == "DISCONNECT"] == [0x82], closing
