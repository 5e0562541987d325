"""MQTT 5 features seen from paho and raw clients: subscription options and identifiers,
message expiry, property pass-through, topic aliases, CONNACK properties, and the client's
Maximum Packet Size.

Message-expiry tests run the broker on a ManualClock, so the time a message waits is exact."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from brokerthread import MOMENT
from paho_helpers import V5, V311


def props(packet_type: int = PacketTypes.PUBLISH, **values) -> Properties:
    out = Properties(packet_type)
    for name, value in values.items():
        setattr(out, name, value)
    return out


def sub_ids(msg) -> list[int]:
    return sorted(getattr(msg.properties, "SubscriptionIdentifier", None) or [])


# --------------------------------------------------------------------------------------------
# subscription options and identifiers


def test_overlapping_subscriptions_one_copy_at_max_qos_with_all_identifiers(broker, clients):
    """``a/+`` (QoS 1, id 1) and ``a/#`` (QoS 2, id 2) both match ``a/b``: one copy at QoS
    2 [MQTT-3.3.4-2] carrying both identifiers [MQTT-3.3.4-3, -4]."""
    s = clients.connect(broker, "overlap", V5)
    assert s.sub("a/+", 1, sub_id=1) == [1]
    assert s.sub("a/#", 2, sub_id=2) == [2]
    p = clients.connect(broker, "pub", V5)
    p.pub("a/b", b"q2", 2)
    p.pub("a/b", b"q1", 1)
    p.pub("a/b/c", b"deep", 2)
    p.pub("a/b", b"marker", 2)
    s.wait_for_payload(b"marker")
    got = {m.payload: m for m in s.before(b"marker")}
    assert sorted(got) == [b"deep", b"q1", b"q2"], [m.payload for m in s.messages]
    assert len(s.before(b"marker")) == 3, "more than one copy of a message"
    assert (got[b"q2"].qos, sub_ids(got[b"q2"])) == (2, [1, 2])
    assert (got[b"q1"].qos, sub_ids(got[b"q1"])) == (1, [1, 2])
    assert (got[b"deep"].qos, sub_ids(got[b"deep"])) == (2, [2])


def test_subscription_identifiers_in_deliveries(broker, clients):
    p = clients.connect(broker, "pub", V5)
    p.pub("si/r", b"retained", 1, retain=True)
    s = clients.connect(broker, "ids", V5)
    s.sub("si/a", 1, sub_id=42)
    s.sub("si/b", 1)  # no identifier
    s.sub("si/r", 1, sub_id=268_435_455)  # the largest identifier
    assert sub_ids(s.wait_for_payload(b"retained")) == [268_435_455]
    p.pub("si/a", b"with-id", 1)
    p.pub("si/b", b"without-id", 1)
    assert sub_ids(s.wait_for_payload(b"with-id")) == [42]
    assert sub_ids(s.wait_for_payload(b"without-id")) == []
    # A new SUBSCRIBE to the same filter replaces the identifier.
    s.sub("si/a", 1, sub_id=43)
    p.pub("si/a", b"new-id", 1)
    assert sub_ids(s.wait_for_payload(b"new-id")) == [43]


def test_no_local_suppresses_own_messages(broker, clients):
    c = clients.connect(broker, "nolocal", V5)
    c.sub("nl/t", 1, no_local=True)
    c.sub("nl/marker", 1)
    other = clients.connect(broker, "other", V5)
    other.sub("nl/t", 1)
    c.pub("nl/t", b"own", 1)
    c.pub("nl/marker", b"marker", 1)
    c.wait_for_payload(b"marker")
    assert c.before(b"marker") == [], "No Local: own message delivered [MQTT-3.8.3-3]"
    assert other.wait_for_payload(b"own").topic == "nl/t"
    other.pub("nl/t", b"theirs", 1)
    assert c.wait_for_payload(b"theirs").topic == "nl/t"


def test_retain_as_published_keeps_retain_flag_on_live_messages(broker, clients):
    rap = clients.connect(broker, "rap", V5)
    rap.sub("rap/t", 1, retain_as_published=True)
    plain = clients.connect(broker, "plain", V5)
    plain.sub("rap/t", 1)
    p = clients.connect(broker, "pub", V5)
    p.pub("rap/t", b"retained", 1, retain=True)
    p.pub("rap/t", b"not-retained", 1)
    assert rap.wait_for_payload(b"retained").retain is True
    assert rap.wait_for_payload(b"not-retained").retain is False
    assert plain.wait_for_payload(b"retained").retain is False
    assert plain.wait_for_payload(b"not-retained").retain is False


# --------------------------------------------------------------------------------------------
# message expiry and properties


def queued_while_offline(clients, broker, *messages: tuple[bytes, int | None]) -> None:
    """Queue QoS 1 ``(payload, message expiry interval)`` messages on ``e/t`` for the
    persistent session "exp", which is offline when this returns."""
    s = clients.connect(broker, "exp", V5, clean=False, session_expiry=300)
    s.sub("e/#", 1)
    s.stop()
    broker.wait_offline("exp")
    p = clients.connect(broker, "pub", V5)
    for payload, expiry in messages:
        properties = None if expiry is None else props(MessageExpiryInterval=expiry)
        p.pub("e/t", payload, 1, properties=properties)


def delivered_on_resume(clients, broker):
    """Resume "exp" and return what it gets before a live marker."""
    s = clients.connect(broker, "exp", V5, clean=False, session_expiry=300)
    assert s.session_present == [True]
    clients.connect(broker, "marker-pub", V5).pub("e/marker", b"marker", 1)
    s.wait_for_payload(b"marker")
    return s.before(b"marker")


def expiry_of(message) -> int | None:
    return getattr(message.properties, "MessageExpiryInterval", None)


def test_message_expiry_for_offline_session(make_broker, clock, clients):
    """Queued messages whose Message Expiry Interval passed are not delivered; others are,
    with the interval reduced by the time they waited [MQTT-3.3.2-5, -6]."""
    broker = make_broker(clock=clock)
    queued_while_offline(clients, broker, (b"short", 1), (b"long", 60), (b"none", None))
    broker.advance(2)
    got = delivered_on_resume(clients, broker)
    assert [m.payload for m in got] == [b"long", b"none"], [m.payload for m in got]
    assert [expiry_of(m) for m in got] == [58, None]


def test_queued_message_delivered_until_its_expiry_interval_ends(make_broker, clock, clients):
    """Just before its Message Expiry Interval ends a queued message is still delivered,
    with the whole second that is left [MQTT-3.3.2-6]."""
    broker = make_broker(clock=clock)
    queued_while_offline(clients, broker, (b"edge", 2))
    broker.advance(2 - MOMENT)
    got = delivered_on_resume(clients, broker)
    assert [(m.payload, expiry_of(m)) for m in got] == [(b"edge", 1)]


def test_expired_queued_messages_do_not_crowd_out_fresh_ones(make_broker, clock, clients):
    """Messages whose Message Expiry Interval has passed MUST be deleted for an offline
    subscriber [MQTT-3.3.2-5]; they must not fill the queue (max 2 here) so that a fresh
    message published afterwards is dropped."""
    broker = make_broker(clock=clock, max_queued_messages=2)
    queued_while_offline(clients, broker, (b"short0", 1), (b"short1", 1))
    broker.advance(1)
    clients.connect(broker, "fresh-pub", V5).pub("e/t", b"fresh", 1)
    got = delivered_on_resume(clients, broker)
    assert [m.payload for m in got] == [b"fresh"]


def test_message_expiry_forwarded_on_live_delivery(make_broker, clock, clients):
    broker = make_broker(clock=clock)
    s = clients.connect(broker, "sub", V5)
    s.sub("el/t", 1)
    p = clients.connect(broker, "pub", V5)
    p.pub("el/t", b"m", 1, properties=props(MessageExpiryInterval=60))
    assert expiry_of(s.wait_for_payload(b"m")) == 60


def test_publish_properties_passed_through_unchanged(broker, clients):
    """User properties (order and duplicates kept [MQTT-3.3.2-17, -18]), Response Topic,
    Correlation Data, Content Type and Payload Format Indicator reach the subscriber as
    sent."""
    s5 = clients.connect(broker, "sub5", V5)
    s5.sub("pp/t", 2)
    s3 = clients.connect(broker, "sub3", V311)
    s3.sub("pp/t", 2)
    sent = props(
        UserProperty=[("k", "v"), ("k", "v2"), ("a", "b"), ("ünï", "ça")],
        ResponseTopic="resp/t",
        CorrelationData=b"\x00\x01\xff",
        ContentType="application/json",
        PayloadFormatIndicator=1,
    )
    p = clients.connect(broker, "pub", V5)
    p.pub("pp/t", b'{"x": 1}', 2, properties=sent)
    msg = s5.wait_for_payload(b'{"x": 1}')
    got = msg.properties
    assert got.UserProperty == [("k", "v"), ("k", "v2"), ("a", "b"), ("ünï", "ça")]
    assert got.ResponseTopic == "resp/t"
    assert got.CorrelationData == b"\x00\x01\xff"
    assert got.ContentType == "application/json"
    assert got.PayloadFormatIndicator == 1
    assert s3.wait_for_payload(b'{"x": 1}').topic == "pp/t"


def test_properties_of_retained_message_kept(broker, clients):
    p = clients.connect(broker, "pub", V5)
    sent = props(UserProperty=[("u", "1")], ContentType="text/plain", ResponseTopic="r/t")
    p.pub("rp/t", b"ret", 1, retain=True, properties=sent)
    s = clients.connect(broker, "sub", V5)
    s.sub("rp/t", 1)
    got = s.wait_for_payload(b"ret").properties
    assert got.UserProperty == [("u", "1")]
    assert got.ContentType == "text/plain"
    assert got.ResponseTopic == "r/t"


# --------------------------------------------------------------------------------------------
# topic aliases from the client


@pytest.mark.parametrize("sub_version", [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")])
def test_topic_alias_from_client(broker, clients, sub_version):
    s = clients.connect(broker, "sub", sub_version)
    s.sub("ta/#", 1)
    p = clients.connect(broker, "pub", V5)
    p.pub("ta/t", b"1", 1, properties=props(TopicAlias=3))
    p.pub("", b"2", 1, properties=props(TopicAlias=3))
    p.pub("ta/u", b"3", 1, properties=props(TopicAlias=3))  # re-map alias 3
    p.pub("", b"4", 1, properties=props(TopicAlias=3))
    p.pub("ta/t", b"5", 0, properties=props(TopicAlias=1))
    p.pub("", b"6", 1, properties=props(TopicAlias=1))
    msgs = s.wait_for_messages(6)
    assert [(m.topic, m.payload) for m in msgs] == [
        ("ta/t", b"1"),
        ("ta/t", b"2"),
        ("ta/u", b"3"),
        ("ta/u", b"4"),
        ("ta/t", b"5"),
        ("ta/t", b"6"),
    ]
    if sub_version == V5:
        for m in msgs:  # the subscriber allowed no aliases (Topic Alias Maximum absent = 0)
            assert getattr(m.properties, "TopicAlias", None) is None


@pytest.mark.parametrize(
    ("topic", "alias", "codes"),
    [
        pytest.param("ta/t", 0, {0x94}, id="alias-0"),
        pytest.param("ta/t", 65, {0x94}, id="alias-above-maximum"),
        pytest.param("", 5, {0x94, 0x82}, id="unknown-alias"),
    ],
)
def test_invalid_topic_alias_disconnects(broker, raw, topic, alias, codes):
    """Alias 0 or above the broker's Topic Alias Maximum (64): DISCONNECT 0x94
    [MQTT-3.3.2-8, -9]; an empty topic with an alias never set: 0x94 or 0x82 (protocol
    error)."""
    c, _ = raw.connected(broker, "alias", 5)
    c.publish(topic, b"x", qos=1, packet_id=1, props=[("TopicAlias", alias)])
    closing = c.wait_closed()
    assert [pk.reason_code for pk in closing if pk.name == "DISCONNECT"] in [[x] for x in codes], (
        closing
    )


# --------------------------------------------------------------------------------------------
# CONNACK properties


def test_connack_properties_with_default_settings(broker, raw):
    _, connack = raw.connected(broker, "props", 5)
    p = connack.props
    assert p.get("ReceiveMaximum") == broker.settings.receive_maximum == 1024
    assert p.get("TopicAliasMaximum") == broker.settings.topic_alias_maximum == 64
    assert p.get("MaximumPacketSize") == broker.settings.max_packet_size
    assert p.get("RetainAvailable", 1) == 1
    assert p.get("WildcardSubscriptionAvailable", 1) == 1
    assert p.get("SubscriptionIdentifierAvailable", 1) == 1
    assert p.get("SharedSubscriptionAvailable", 1) == 1
    assert "MaximumQoS" not in p, "Maximum QoS may only be sent as 0 or 1"
    assert p.get("ServerKeepAlive", 60) == 60
    assert "AssignedClientIdentifier" not in p


def test_connack_properties_reflect_settings(make_broker, raw):
    broker = make_broker(
        receive_maximum=7,
        topic_alias_maximum=5,
        max_packet_size=5000,
        retain_available=False,
        wildcard_subscription_available=False,
        subscription_identifier_available=False,
        shared_subscription_available=False,
        maximum_qos=1,
        max_keep_alive=10,
    )
    _, connack = raw.connected(broker, "props", 5)
    assert connack.props == {
        "ReceiveMaximum": 7,
        "TopicAliasMaximum": 5,
        "MaximumPacketSize": 5000,
        "RetainAvailable": 0,
        "WildcardSubscriptionAvailable": 0,
        "SubscriptionIdentifierAvailable": 0,
        "SharedSubscriptionAvailable": 0,
        "MaximumQoS": 1,
        "ServerKeepAlive": 10,
    } | {k: v for k, v in connack.props.items() if k in ("ReasonString", "UserProperty")}


def test_server_keep_alive_caps_requested_value(make_broker, clients):
    broker = make_broker(max_keep_alive=10)
    c = clients.connect(broker, "ka", V5, keepalive=60)
    assert getattr(c.connack_props, "ServerKeepAlive", None) == 10
    low = clients.connect(broker, "ka2", V5, keepalive=5)
    assert getattr(low.connack_props, "ServerKeepAlive", 5) == 5


def test_disabled_features_refused(make_broker, raw):
    broker = make_broker(
        wildcard_subscription_available=False,
        subscription_identifier_available=False,
        maximum_qos=1,
    )
    c, _ = raw.connected(broker, "feat", 5)
    suback = c.subscribe(1, [("w/+", 1), ("w/#", 1), ("w/exact", 1), ("w/q2", 2)])
    assert suback.reason_codes == [0xA2, 0xA2, 0x01, 0x01]
    # A QoS 2 PUBLISH above Maximum QoS 1: DISCONNECT 0x9B [MQTT-3.2.2-11].
    c.publish("w/exact", b"x", qos=2, packet_id=2)
    closing = c.wait_closed()
    assert [pk.reason_code for pk in closing if pk.name == "DISCONNECT"] == [0x9B], closing
    # A Subscription Identifier when they are not available: DISCONNECT 0xA1.
    d, _ = raw.connected(broker, "feat2", 5)
    d.send(bytes([0x82, 11, 0, 1, 2, 0x0B, 5]) + b"\x00\x03s/t" + b"\x01")
    closing = d.wait_closed()
    assert [pk.reason_code for pk in closing if pk.name == "DISCONNECT"] == [0xA1], closing


# --------------------------------------------------------------------------------------------
# the client's Maximum Packet Size


def test_message_larger_than_client_maximum_packet_size_is_dropped(broker, clients):
    """A client announcing Maximum Packet Size 100 does not get a 500-byte message
    [MQTT-3.1.2-25], stays connected and still gets later small messages."""
    small = clients.connect(
        broker, "small", V5, properties=props(PacketTypes.CONNECT, MaximumPacketSize=100)
    )
    small.sub("big/#", 1)
    control = clients.connect(broker, "control", V5)
    control.sub("big/#", 1)
    p = clients.connect(broker, "pub", V5)
    p.pub("big/t", b"L" * 500, 1)
    p.pub("big/t", b"small", 1)
    control.wait_for_payload(b"small")
    assert [m.payload for m in control.messages] == [b"L" * 500, b"small"]
    small.wait_for_payload(b"small")
    assert [m.payload for m in small.messages] == [b"small"]
    assert small.client.is_connected()
    assert small.disconnects == []


def test_resend_on_reconnect_respects_new_maximum_packet_size(broker, clients, raw):
    """The client reconnects with Maximum Packet Size 64 while a 300-byte QoS 1 PUBLISH is
    unacknowledged: the server MUST NOT send a packet larger than that [MQTT-3.1.2-24]; it
    discards it as if delivered [MQTT-3.1.2-25]."""
    sub, _ = raw.connected(broker, "mp-sub", 5, clean=False, session_expiry=300)
    sub.subscribe(1, [("mp/t", 1)])
    pub = clients.connect(broker, "mp-pub", V5)
    pub.pub("mp/t", b"x" * 300, 1)
    assert len(sub.expect("PUBLISH").payload) == 300
    sub.drop()
    broker.wait_offline("mp-sub")

    props = [("MaximumPacketSize", 64)]
    again, connack = raw.connected(broker, "mp-sub", 5, False, 300, props)
    assert connack.session_present
    assert again.until_pingresp() == [], "the 300-byte message was sent after all"
    pub.pub("mp/t", b"small", 1)
    small = again.expect("PUBLISH")
    assert small.payload == b"small" and small.wire_size <= 64
