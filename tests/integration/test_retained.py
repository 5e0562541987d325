"""Retained messages: stored, replaced, cleared, delivered on subscribe with RETAIN set,
v5 Retain Handling, QoS of retained deliveries, RETAIN flag on live deliveries."""

from __future__ import annotations

import pytest

from paho_helpers import V5, V311

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


def retained_then_marker(clients, broker, version, topic_filter, qos=1, **sub_kwargs):
    """Subscribe a fresh client to ``topic_filter`` (and ``zz/marker``), publish a live marker
    and return the messages that arrived before it: exactly the retained deliveries."""
    s = clients.connect(broker, f"sub-{len(clients.all)}", version)
    s.sub("zz/marker", 1)
    s.sub(topic_filter, qos, **sub_kwargs)
    p = clients.connect(broker, f"marker-{len(clients.all)}", version)
    p.pub("zz/marker", b"marker", 1)
    s.wait_for_payload(b"marker")
    return s, s.before(b"marker")


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_delivered_on_subscribe_with_wildcards(broker, clients, version):
    p = clients.connect(broker, "pub", version)
    p.pub("w/a", b"wa", 1, retain=True)
    p.pub("w/b/c", b"wbc", 1, retain=True)
    p.pub("x/a", b"xa", 1, retain=True)
    p.pub("$y/a", b"ya", 1, retain=True)
    p.pub("w/live", b"not retained", 1)

    _, got = retained_then_marker(clients, broker, version, "w/#")
    assert sorted((m.topic, m.payload) for m in got) == [("w/a", b"wa"), ("w/b/c", b"wbc")]
    assert all(m.retain for m in got), "retained deliveries must have RETAIN=1 [MQTT-3.3.1-8]"

    _, got = retained_then_marker(clients, broker, version, "+/a")
    assert sorted(m.topic for m in got) == ["w/a", "x/a"]

    _, got = retained_then_marker(clients, broker, version, "#")
    assert sorted(m.topic for m in got) == ["w/a", "w/b/c", "x/a"], "$y/a must not match #"

    _, got = retained_then_marker(clients, broker, version, "$y/+")
    assert [(m.topic, m.payload, m.retain) for m in got] == [("$y/a", b"ya", True)]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_is_replaced(broker, clients, version):
    p = clients.connect(broker, "pub", version)
    p.pub("r/a", b"first", 1, retain=True)
    p.pub("r/a", b"second", 1, retain=True)
    _, got = retained_then_marker(clients, broker, version, "r/#")
    assert [(m.topic, m.payload) for m in got] == [("r/a", b"second")]


@pytest.mark.parametrize("version", VERSIONS)
def test_retained_message_cleared_by_empty_payload(broker, clients, version):
    """A retained PUBLISH with an empty payload removes the retained message and is not
    stored itself [MQTT-3.3.1-10, -11]."""
    p = clients.connect(broker, "pub", version)
    p.pub("r/a", b"first", 1, retain=True)
    p.pub("r/b", b"kept", 1, retain=True)
    p.pub("r/a", b"", 1, retain=True)
    _, got = retained_then_marker(clients, broker, version, "r/#")
    assert [(m.topic, m.payload) for m in got] == [("r/b", b"kept")]


@pytest.mark.parametrize("version", VERSIONS)
def test_qos0_retained_message_is_stored(broker, clients, version):
    p = clients.connect(broker, "pub", version)
    p.pub("r/q0", b"zero", 0, retain=True)
    p.pub("r/sync", b"sync", 1)  # same connection, so the QoS 0 publish was handled before
    _, got = retained_then_marker(clients, broker, version, "r/q0")
    assert [(m.payload, m.qos, m.retain) for m in got] == [(b"zero", 0, True)]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("published", "requested"), [(2, 1), (2, 0), (1, 2), (1, 0), (0, 2)])
def test_retained_qos_is_min_of_message_and_subscription(
    broker, clients, version, published, requested
):
    p = clients.connect(broker, "pub", version)
    p.pub("rq/t", b"retained", published, retain=True)
    p.pub("rq/sync", b"sync", 1)
    s = clients.connect(broker, "sub", version)
    s.sub("rq/t", requested)
    msg = s.wait_for_payload(b"retained")
    assert msg.retain
    assert msg.qos == min(published, requested)


@pytest.mark.parametrize("version", VERSIONS)
def test_live_delivery_has_retain_flag_cleared(broker, clients, version):
    """A retained PUBLISH forwarded to an existing subscription goes out with RETAIN=0
    (3.1.1 [MQTT-3.3.1-9]; v5 without Retain As Published [MQTT-3.3.1-13])."""
    s = clients.connect(broker, "sub", version)
    s.sub("lv/t", 1)
    p = clients.connect(broker, "pub", version)
    p.pub("lv/t", b"live-retained", 1, retain=True)
    msg = s.wait_for_payload(b"live-retained")
    assert not msg.retain
    # ... but it was stored: a new subscription gets it with RETAIN=1.
    _, got = retained_then_marker(clients, broker, version, "lv/t")
    assert [(m.payload, m.retain) for m in got] == [(b"live-retained", True)]


@pytest.mark.parametrize("version", VERSIONS)
def test_resubscribe_delivers_retained_again_by_default(broker, clients, version):
    """3.1.1 [MQTT-3.8.4-3] and v5 Retain Handling 0: retained messages are sent on every
    SUBSCRIBE, also one that replaces an existing subscription."""
    p = clients.connect(broker, "pub", version)
    p.pub("rh/t", b"ret", 1, retain=True)
    s = clients.connect(broker, "sub", version)
    s.sub("rh/t", 1)
    s.wait_for_payload(b"ret")
    s.sub("rh/t", 1)
    s.wait_for_messages(2)
    assert [m.payload for m in s.messages] == [b"ret", b"ret"]


def test_v5_retain_handling_1_only_for_new_subscription(broker, clients):
    p = clients.connect(broker, "pub", V5)
    p.pub("rh/t", b"ret", 1, retain=True)
    s = clients.connect(broker, "sub", V5)
    s.sub("zz/marker", 1)
    s.sub("rh/t", 1, retain_handling=1)
    s.wait_for_payload(b"ret")
    s.sub("rh/t", 1, retain_handling=1)  # the subscription exists: nothing
    p.pub("zz/marker", b"marker", 1)
    s.wait_for_payload(b"marker")
    assert [m.payload for m in s.before(b"marker")] == [b"ret"]


def test_v5_retain_handling_2_never_sends_retained(broker, clients):
    p = clients.connect(broker, "pub", V5)
    p.pub("rh/t", b"ret", 1, retain=True)
    s = clients.connect(broker, "sub", V5)
    s.sub("zz/marker", 1)
    s.sub("rh/t", 1, retain_handling=2)
    p.pub("zz/marker", b"marker", 1)
    s.wait_for_payload(b"marker")
    assert s.before(b"marker") == []
    # Live messages still flow through that subscription.
    p.pub("rh/t", b"live", 1)
    assert not s.wait_for_payload(b"live").retain


def test_v5_retain_handling_0_on_resubscribe(broker, clients):
    p = clients.connect(broker, "pub", V5)
    p.pub("rh/t", b"ret", 1, retain=True)
    s = clients.connect(broker, "sub", V5)
    s.sub("rh/t", 1, retain_handling=0)
    s.sub("rh/t", 1, retain_handling=0)
    s.wait_for_messages(2)
    assert [(m.payload, m.retain) for m in s.messages] == [(b"ret", True), (b"ret", True)]


def test_v5_retain_as_published_on_retained_delivery(broker, clients):
    """Messages sent because of a new subscription always carry RETAIN=1, whatever Retain As
    Published says (MQTT 5.0 section 3.3.1.3)."""
    p = clients.connect(broker, "pub", V5)
    p.pub("rap/t", b"ret", 1, retain=True)
    s = clients.connect(broker, "sub", V5)
    s.sub("rap/t", 1, retain_as_published=False)
    assert s.wait_for_payload(b"ret").retain


def test_retain_not_available_v5(make_broker, clients, raw):
    """With retain_available=False a v5 CONNACK says RetainAvailable=0 and a retained
    PUBLISH is refused with DISCONNECT 0x9A (MQTT 5.0 section 3.2.2.3.5)."""
    broker = make_broker(retain_available=False)
    c, connack = raw.connected(broker, "noret", 5)
    assert connack.props.get("RetainAvailable") == 0, connack
    c.publish("nr/t", b"x", qos=1, packet_id=1, retain=True)
    closing = c.wait_closed()
    assert [pk.reason_code for pk in closing if pk.name == "DISCONNECT"] == [0x9A], closing
