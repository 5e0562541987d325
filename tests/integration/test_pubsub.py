"""Publish / subscribe through the broker with paho clients: QoS 0/1/2, QoS downgrade,
SUBACK / UNSUBACK codes, wildcard matching and ``$`` topics."""

from __future__ import annotations

import pytest

from paho_helpers import V5, V311

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("sub_qos", [0, 1, 2])
def test_delivery_at_min_of_published_and_granted_qos(broker, clients, version, sub_qos):
    """Each message reaches the subscriber once, at min(published QoS, granted QoS)
    [MQTT-3.8.4-6]; the SUBACK grants the requested QoS."""
    s = clients.connect(broker, "sub", version)
    assert s.sub("q/t", sub_qos) == [sub_qos]
    p = clients.connect(broker, "pub", version)
    for pub_qos in (0, 1, 2):
        p.pub("q/t", f"qos{pub_qos}".encode(), pub_qos)
    p.pub("q/t", b"marker", 1)
    s.wait_for_payload(b"marker")
    # paho hands QoS 2 deliveries to on_message only at PUBREL: wait for all three.
    s.wait_for_messages(4)
    got = {m.payload: m for m in s.messages}
    assert sorted(got) == [b"marker", b"qos0", b"qos1", b"qos2"], [m.payload for m in s.messages]
    assert len(s.messages) == 4, [m.payload for m in s.messages]
    for pub_qos in (0, 1, 2):
        msg = got[f"qos{pub_qos}".encode()]
        assert msg.qos == min(pub_qos, sub_qos), (pub_qos, sub_qos, msg.qos)
        assert msg.topic == "q/t"
        assert not msg.retain


@pytest.mark.parametrize("version", VERSIONS)
def test_suback_grants_each_requested_qos(broker, clients, version):
    s = clients.connect(broker, "sub", version)
    assert s.sub_many([("a", 0), ("b", 1), ("c", 2)]) == [0, 1, 2]


@pytest.mark.parametrize("version", VERSIONS)
def test_suback_caps_qos_at_maximum_qos(make_broker, clients, version):
    """With maximum_qos=1 a QoS 2 subscription is granted QoS 1 and deliveries are QoS 1."""
    broker = make_broker(maximum_qos=1)
    s = clients.connect(broker, "sub", version)
    assert s.sub("cap/t", 2) == [1]
    p = clients.connect(broker, "pub", version)
    p.pub("cap/t", b"one", 1)
    msg = s.wait_for_payload(b"one")
    assert msg.qos == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_unsubscribe_stops_delivery(broker, clients, version):
    s = clients.connect(broker, "sub", version)
    s.sub("u/t", 1)
    s.sub("u/marker", 1)
    p = clients.connect(broker, "pub", version)
    p.pub("u/t", b"before", 1)
    s.wait_for_payload(b"before")
    codes = s.unsub("u/t")
    if version == V5:
        assert codes == [0x00], codes
    p.pub("u/t", b"after", 1)
    p.pub("u/marker", b"marker", 1)
    s.wait_for_payload(b"marker")
    assert [m.payload for m in s.before(b"marker")] == [b"before"]


def test_unsuback_v5_no_subscription_existed(broker, clients):
    """UNSUBACK reason 0x11 for a filter without a subscription, 0x00 for one with."""
    s = clients.connect(broker, "sub", V5)
    s.sub("has/sub", 1)
    assert s.unsub("never/subscribed") == [0x11]
    assert s.unsub(["has/sub", "also/never"]) == [0x00, 0x11]
    # Once removed, the same filter has no subscription any more.
    assert s.unsub("has/sub") == [0x11]


TOPICS = ["a", "a/b", "a/b/c", "a//c", "a/b/c/d", "b/a", "/a", "ab"]
EXPECTED = {
    "a/+/c": {"a/b/c", "a//c"},
    "a/#": {"a", "a/b", "a/b/c", "a//c", "a/b/c/d"},
    "+": {"a", "ab"},
    "+/+": {"a/b", "b/a", "/a"},
    "#": set(TOPICS),
    "a/b": {"a/b"},
    "+/b/#": {"a/b", "a/b/c", "a/b/c/d"},
    "/+": {"/a"},
    "+/+/+/+": {"a/b/c/d"},
}


@pytest.mark.parametrize("version", VERSIONS)
def test_wildcard_matching(broker, clients, version):
    """Each filter gets exactly the topics it matches, once each [MQTT-4.7.1]."""
    subs = {}
    for i, topic_filter in enumerate(EXPECTED):
        s = clients.connect(broker, f"sub{i}", version)
        assert s.sub(topic_filter, 1) == [1]
        assert s.sub("zz/marker", 1) == [1]
        subs[topic_filter] = s
    p = clients.connect(broker, "pub", version)
    for topic in TOPICS:
        p.pub(topic, topic.encode(), 1)
    p.pub("zz/marker", b"marker", 1)
    for topic_filter, s in subs.items():
        s.wait_for_payload(b"marker")
        got = [m.topic for m in s.before(b"marker")]
        assert sorted(got) == sorted(EXPECTED[topic_filter]), (topic_filter, got)


@pytest.mark.parametrize("version", VERSIONS)
def test_dollar_topics_not_matched_by_leading_wildcards(broker, clients, version):
    """``#`` and ``+/...`` do not match topics starting with ``$``; ``$x/#`` does
    [MQTT-4.7.2-1]."""
    hash_sub = clients.connect(broker, "hash", version)
    hash_sub.sub("#", 1)
    plus_sub = clients.connect(broker, "plus", version)
    plus_sub.sub("+/info", 1)
    plus_sub.sub("+/a/b", 1)
    dollar_sub = clients.connect(broker, "dollar", version)
    dollar_sub.sub("$x/#", 1)
    dollar_sub.sub("x/info", 1)
    p = clients.connect(broker, "pub", version)
    p.pub("$x/info", b"d1", 1)
    p.pub("$x/a/b", b"d2", 1)
    p.pub("x/info", b"marker", 1)
    for s in (hash_sub, plus_sub):
        s.wait_for_payload(b"marker")
        assert s.before(b"marker") == [], [m.topic for m in s.messages]
    dollar_sub.wait_for_payload(b"marker")
    got = [(m.topic, m.payload) for m in dollar_sub.before(b"marker")]
    assert got == [("$x/info", b"d1"), ("$x/a/b", b"d2")]


@pytest.mark.parametrize("version", VERSIONS)
def test_subscriber_gets_own_messages_by_default(broker, clients, version):
    c = clients.connect(broker, "self", version)
    c.sub("own/t", 1)
    c.pub("own/t", b"mine", 1)
    assert c.wait_for_payload(b"mine").topic == "own/t"


@pytest.mark.parametrize("version", VERSIONS)
def test_resubscribe_replaces_qos_without_duplicates(broker, clients, version):
    """Subscribing again to the same filter replaces the subscription [MQTT-3.8.4-3]: one
    copy per message, at the new QoS."""
    s = clients.connect(broker, "sub", version)
    s.sub("re/t", 0)
    assert s.sub("re/t", 1) == [1]
    p = clients.connect(broker, "pub", version)
    p.pub("re/t", b"m", 1)
    p.pub("re/t", b"marker", 1)
    s.wait_for_payload(b"marker")
    before = s.before(b"marker")
    assert [m.payload for m in before] == [b"m"]
    assert before[0].qos == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_payload_bytes_are_unchanged(broker, clients, version):
    s = clients.connect(broker, "sub", version)
    s.sub("bin/#", 2)
    p = clients.connect(broker, "pub", version)
    payloads = [b"", bytes(range(256)), b"x" * 70_000]
    for i, payload in enumerate(payloads):
        p.pub(f"bin/{i}", payload, 2)
    msgs = s.wait_for_messages(3)
    assert {m.topic: m.payload for m in msgs} == {f"bin/{i}": pl for i, pl in enumerate(payloads)}
