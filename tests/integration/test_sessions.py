"""Sessions: persistence across connections and restarts, clean start, session expiry,
takeover, client identifiers, and QoS 2 exactly-once when the connection breaks in the middle
of a flow.

Session-expiry tests run the broker on a ManualClock: broker time is moved to just before the
session ends (it is still there) and to its end (it is gone)."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from brokerthread import MOMENT, ManualClock
from paho_helpers import V5, V311, wait_until
from rawmqtt import Will

VERSIONS = [pytest.param(V311, id="v311"), pytest.param(V5, id="v5")]
LEVELS = [pytest.param(4, id="v311"), pytest.param(5, id="v5")]


def persistent(clients, broker, client_id, version, **kwargs):
    """Connect with clean session 0 (v5: clean start 0 and a 300 s session expiry)."""
    if version == V5:
        kwargs.setdefault("session_expiry", 300)
    return clients.connect(broker, client_id, version, clean=False, **kwargs)


@pytest.mark.parametrize("version", VERSIONS)
def test_persistent_session_keeps_subscriptions_and_queues_qos1_qos2(broker, clients, version):
    s = persistent(clients, broker, "keeper", version)
    assert s.session_present == [False]
    s.sub("s/#", 2)
    s.stop()
    p = clients.connect(broker, "pub", version)
    p.pub("s/1", b"offline-q1", 1)
    p.pub("s/2", b"offline-q2", 2)
    s2 = persistent(clients, broker, "keeper", version)
    assert s2.session_present == [True]
    msgs = s2.wait_for_messages(2)
    assert {(m.topic, m.payload, m.qos) for m in msgs} == {
        ("s/1", b"offline-q1", 1),
        ("s/2", b"offline-q2", 2),
    }
    # The subscription itself survived: live messages arrive too, without re-subscribing.
    p.pub("s/3", b"live", 1)
    s2.wait_for_payload(b"live")
    assert [m.payload for m in s2.before(b"live")].count(b"offline-q1") == 1


@pytest.mark.parametrize("version", VERSIONS)
def test_clean_session_gives_fresh_session(broker, clients, version):
    """Clean session 1 / clean start 1 discards the old session: no session present, no old
    subscriptions, no queued messages [MQTT-3.1.2-4]."""
    s = persistent(clients, broker, "fresh", version)
    s.sub("f/#", 1)
    s.stop()
    p = clients.connect(broker, "pub", version)
    p.pub("f/queued", b"queued", 1)
    s2 = clients.connect(broker, "fresh", version, clean=True)
    assert s2.session_present == [False]
    s2.sub("marker", 1)
    p.pub("f/live", b"live", 1)
    p.pub("marker", b"marker", 1)
    s2.wait_for_payload(b"marker")
    assert s2.before(b"marker") == [], [m.payload for m in s2.messages]
    # And the clean session is not kept after it ends (3.1.1 [MQTT-3.1.2-6]; v5 expiry 0).
    s2.stop()
    s3 = persistent(clients, broker, "fresh", version)
    assert s3.session_present == [False]


def test_v5_session_expiry_zero_ends_at_disconnect(broker, clients):
    s = clients.connect(broker, "zero", V5, clean=False)  # no Session Expiry Interval = 0
    s.sub("z/#", 1)
    s.stop()
    p = clients.connect(broker, "pub", V5)
    p.pub("z/t", b"lost", 1)
    s2 = clients.connect(broker, "zero", V5, clean=False, session_expiry=300)
    assert s2.session_present == [False]
    s2.sub("marker", 1)
    p.pub("z/t", b"after", 1)
    p.pub("marker", b"marker", 1)
    s2.wait_for_payload(b"marker")
    assert s2.before(b"marker") == [], [m.payload for m in s2.messages]


def test_v5_session_expiry_one_second(make_broker, clock, clients):
    """A session with Session Expiry Interval 1 is still there just before 1 s offline and
    gone at 1 s."""
    broker = make_broker(clock=clock)
    s = clients.connect(broker, "short", V5, clean=False, session_expiry=1)
    s.sub("e/#", 1)
    s.stop()
    broker.wait_offline("short")
    broker.advance(1 - MOMENT)
    # Within the interval the session is still there (and the reconnect restarts the clock).
    s2 = clients.connect(broker, "short", V5, clean=False, session_expiry=1)
    assert s2.session_present == [True]
    s2.stop()
    broker.wait_offline("short")
    broker.advance(1)
    s3 = clients.connect(broker, "short", V5, clean=False, session_expiry=60)
    assert s3.session_present == [False], "session with expiry 1 s still present after 1 s"
    s3.sub("marker", 1)
    p = clients.connect(broker, "pub", V5)
    p.pub("e/t", b"old-subscription", 1)
    p.pub("marker", b"marker", 1)
    s3.wait_for_payload(b"marker")
    assert s3.before(b"marker") == []


def test_v5_session_expiry_can_be_set_at_disconnect(broker, clients):
    """A client connected with a session expiry > 0 may set it to 0 in DISCONNECT, which then
    ends the session (MQTT 5.0 section 3.14.2.2.2)."""
    s = clients.connect(broker, "lower", V5, clean=False, session_expiry=300)
    s.sub("l/#", 1)
    props = Properties(PacketTypes.DISCONNECT)
    props.SessionExpiryInterval = 0
    s.client.disconnect(properties=props)
    wait_until(s.disconnected.is_set, what="disconnect")
    s.client.loop_stop()
    s2 = clients.connect(broker, "lower", V5, clean=False, session_expiry=300)
    assert s2.session_present == [False]


def test_disconnect_raising_session_expiry_from_zero_is_protocol_error(broker, clients, raw):
    """Session Expiry Interval 0 in CONNECT and non-zero in DISCONNECT is a Protocol Error
    [MQTT-3.14.2-2]: the server answers DISCONNECT 0x82 and the will is published."""
    watcher = clients.connect(broker, "pe-watch", V5)
    watcher.sub("pe/#", 1)
    client, _ = raw.connected(broker, "pe-dev", 5, will=Will("pe/will", b"will", qos=1))
    client.disconnect(0, [("SessionExpiryInterval", 60)])
    closing = client.wait_closed()
    assert [(p.name, p.reason_code) for p in closing] == [("DISCONNECT", 0x82)]
    watcher.wait_for_payload(b"will")


@pytest.mark.parametrize("version", VERSIONS)
def test_takeover_closes_old_connection_and_keeps_session(broker, clients, version):
    a = persistent(clients, broker, "twin", version)
    a.sub("tk/#", 1)
    b = persistent(clients, broker, "twin", version)
    assert b.session_present == [True]
    wait_until(a.disconnected.is_set, what="first connection closed by takeover")
    a.client.loop_stop()
    if version == V5:
        assert a.disconnects and int(getattr(a.disconnects[0], "value", -1)) == 0x8E, (
            f"expected DISCONNECT 0x8E (session taken over), got {a.disconnects}"
        )
    p = clients.connect(broker, "pub", version)
    p.pub("tk/t", b"to-new", 1)
    msg = b.wait_for_payload(b"to-new")
    assert msg.topic == "tk/t"
    assert a.messages == []


@pytest.mark.parametrize("version", VERSIONS)
def test_takeover_with_clean_start_discards_session(broker, clients, version):
    a = persistent(clients, broker, "twin2", version)
    a.sub("tc/#", 1)
    b = clients.connect(broker, "twin2", version, clean=True)
    assert b.session_present == [False]
    wait_until(a.disconnected.is_set, what="first connection closed by takeover")
    a.client.loop_stop()
    b.sub("marker", 1)
    p = clients.connect(broker, "pub", version)
    p.pub("tc/t", b"old-sub", 1)
    p.pub("marker", b"marker", 1)
    b.wait_for_payload(b"marker")
    assert b.before(b"marker") == []


@pytest.mark.parametrize("level", LEVELS)
def test_takeover_hands_over_unacknowledged_messages(broker, clients, raw, level):
    """A QoS 1 message sent to the old connection and never acknowledged is re-sent (DUP) to
    the connection that took the session over."""
    a, _ = raw.connected(broker, "twin3", level, clean=False, session_expiry=300)
    assert a.subscribe(1, [("ua/#", 1)]).reason_codes == [1]
    p = clients.connect(broker, "pub", V5)
    p.pub("ua/t", b"unacked", 1)
    first = a.expect("PUBLISH")
    assert first.payload == b"unacked" and first.qos == 1
    b, connack = raw.connected(broker, "twin3", level, clean=False, session_expiry=300)
    assert connack.session_present
    again = b.expect("PUBLISH")
    assert (again.topic, again.payload, again.qos) == ("ua/t", b"unacked", 1)
    assert again.dup, "a re-sent PUBLISH must have DUP=1 [MQTT-3.3.1-1]"
    closing = a.wait_closed()
    if level == 5:
        assert [pk.reason_code for pk in closing if pk.name == "DISCONNECT"] == [0x8E], closing


def test_session_resumed_with_other_protocol_version_resends_inflight(broker, clients, raw):
    """A v5 session resumed by an MQTT 3.1.1 CONNECT (clean session 0): the unacknowledged
    PUBLISH is resent with its original packet identifier and DUP set, encoded as 3.1.1
    [MQTT-4.4.0-1]."""
    sub, _ = raw.connected(broker, "pv-sub", 5, clean=False, session_expiry=300)
    sub.subscribe(1, [("pv/t", 1)], props=[("SubscriptionIdentifier", 7)])
    pub = clients.connect(broker, "pv-pub", V5)
    pub.pub("pv/t", b"once", 1)
    sent = sub.expect("PUBLISH")
    assert sent.props.get("SubscriptionIdentifier") == [7]
    sub.drop()
    broker.wait_offline("pv-sub")
    v3, connack = raw.connected(broker, "pv-sub", 4, clean=False)
    assert connack.session_present
    resent = v3.expect("PUBLISH")
    assert (resent.payload, resent.dup, resent.packet_id) == (b"once", True, sent.packet_id)
    v3.ack("PUBACK", resent.packet_id)


def test_v5_empty_client_id_gets_assigned_identifier(broker, clients):
    c = clients.connect(broker, "", V5, clean=True, session_expiry=60)
    assigned = getattr(c.connack_props, "AssignedClientIdentifier", None)
    assert assigned, f"no AssignedClientIdentifier in CONNACK: {c.connack_props}"
    c.sub("as/#", 1)
    c.stop()
    again = clients.connect(broker, assigned, V5, clean=False, session_expiry=60)
    assert again.session_present == [True], "session of the assigned identifier not kept"


def test_v311_empty_client_id(broker, raw):
    """3.1.1: an empty ClientID is accepted with clean session 1 [MQTT-3.1.3-7] and refused
    with return code 2 with clean session 0 [MQTT-3.1.3-8]."""
    ok = raw(broker, 4)
    connack = ok.connect("", clean=True)
    assert connack is not None and connack.name == "CONNACK"
    assert connack.reason_code == 0
    assert not connack.session_present
    refused = raw(broker, 4)
    connack = refused.connect("", clean=False)
    assert connack is not None and connack.name == "CONNACK", connack
    assert connack.reason_code == 2, f"expected return code 2 (identifier rejected): {connack}"
    assert refused.wait_closed() == []


@pytest.mark.parametrize("level", LEVELS)
def test_empty_client_id_refused_when_not_allowed(make_broker, raw, level):
    broker = make_broker(allow_empty_client_id=False)
    c = raw(broker, level)
    connack = c.connect("", clean=True)
    assert connack is not None and connack.name == "CONNACK", connack
    assert connack.reason_code == (0x85 if level == 5 else 2), connack
    c.wait_closed()


@pytest.mark.parametrize("level", LEVELS)
def test_strict_client_id(make_broker, raw, level):
    """strict_client_id accepts 1-23 chars of 0-9a-zA-Z only [MQTT-3.1.3-5]."""
    broker = make_broker(strict_client_id=True)
    bad = raw(broker, level)
    connack = bad.connect("bad/id!")
    assert connack is not None and connack.name == "CONNACK", connack
    assert connack.reason_code == (0x85 if level == 5 else 2), connack
    bad.wait_closed()
    _, connack = raw.connected(broker, "abcXYZ019", level)
    assert connack.reason_code == 0


@pytest.mark.parametrize("level", LEVELS)
def test_long_and_unusual_client_ids_accepted_by_default(broker, raw, level):
    for cid in ("x" * 200, "with/slash and space", "ünïcødé"):
        _, connack = raw.connected(broker, cid, level)
        assert connack.reason_code == 0


# --------------------------------------------------------------------------------------------
# QoS 2 exactly once across a broken connection


@pytest.mark.parametrize("level", LEVELS)
def test_qos2_outbound_resumes_with_pubrel_after_reconnect(broker, clients, raw, level):
    """Subscriber side: PUBLISH received, PUBREC sent, connection lost before PUBCOMP. On
    reconnect the broker re-sends PUBREL, not the PUBLISH [MQTT-4.4.0-1]; the message is
    delivered once."""
    expiry = 300 if level == 5 else None
    s, _ = raw.connected(broker, "q2sub", level, clean=False, session_expiry=expiry)
    assert s.subscribe(1, [("x/q2", 2)]).reason_codes == [2]
    p = clients.connect(broker, "pub", V5)
    p.pub("x/q2", b"once", 2)
    publish = s.expect("PUBLISH")
    assert (publish.payload, publish.qos) == (b"once", 2)
    s.ack("PUBREC", publish.packet_id)
    pubrel = s.expect("PUBREL")
    assert pubrel.packet_id == publish.packet_id
    s.drop()  # no PUBCOMP

    s2, connack = raw.connected(broker, "q2sub", level, clean=False, session_expiry=expiry)
    assert connack.session_present
    resent = s2.expect("PUBREL")
    assert resent.packet_id == publish.packet_id
    s2.ack("PUBCOMP", publish.packet_id)
    p.pub("x/q2", b"marker", 2)
    marker = s2.expect("PUBLISH")
    assert marker.payload == b"marker", f"expected only the marker, got {marker!r}"
    s2.ack("PUBREC", marker.packet_id)
    assert s2.expect("PUBREL").packet_id == marker.packet_id
    s2.ack("PUBCOMP", marker.packet_id)


@pytest.mark.parametrize("level", LEVELS)
def test_qos2_outbound_publish_resent_with_dup_if_no_pubrec(broker, clients, raw, level):
    """Connection lost after the PUBLISH reached the subscriber but before PUBREC: the broker
    re-sends the PUBLISH with DUP=1 and the same packet identifier."""
    expiry = 300 if level == 5 else None
    s, _ = raw.connected(broker, "q2sub", level, clean=False, session_expiry=expiry)
    s.subscribe(1, [("x/q2", 2)])
    p = clients.connect(broker, "pub", V5)
    p.pub("x/q2", b"once", 2)
    first = s.expect("PUBLISH")
    assert not first.dup
    s.drop()
    s2, connack = raw.connected(broker, "q2sub", level, clean=False, session_expiry=expiry)
    assert connack.session_present
    again = s2.expect("PUBLISH")
    assert (again.payload, again.qos, again.packet_id) == (b"once", 2, first.packet_id)
    assert again.dup
    s2.ack("PUBREC", again.packet_id)
    assert s2.expect("PUBREL").packet_id == again.packet_id
    s2.ack("PUBCOMP", again.packet_id)


@pytest.mark.parametrize("level", LEVELS)
def test_qos2_inbound_exactly_once_across_reconnect(broker, clients, raw, level):
    """Publisher side: PUBLISH (QoS 2) sent, PUBREC received, connection lost. After
    reconnecting, the publisher re-sends the PUBLISH with DUP (allowed before PUBREL) and then
    PUBREL; the broker answers PUBCOMP and subscribers get the message exactly once."""
    s = clients.connect(broker, "sub", V5)
    s.sub("in/q2", 1)  # QoS 1: on_message in arrival order, so the marker is a real fence
    expiry = 300 if level == 5 else None
    p, _ = raw.connected(broker, "q2pub", level, clean=False, session_expiry=expiry)
    p.publish("in/q2", b"once", qos=2, packet_id=7)
    assert p.expect("PUBREC").packet_id == 7
    p.drop()
    p2, connack = raw.connected(broker, "q2pub", level, clean=False, session_expiry=expiry)
    assert connack.session_present
    p2.publish("in/q2", b"once", qos=2, packet_id=7, dup=True)
    assert p2.expect("PUBREC").packet_id == 7
    p2.ack("PUBREL", 7)
    pubcomp = p2.expect("PUBCOMP")
    assert pubcomp.packet_id == 7 and pubcomp.reason_code == 0, pubcomp
    p2.publish("in/q2", b"marker", qos=1, packet_id=8)
    assert p2.expect("PUBACK").packet_id == 8
    s.wait_for_payload(b"marker")
    assert [m.payload for m in s.before(b"marker")] == [b"once"]
    # The packet identifier is free again: a new message with id 7 is a new message.
    p2.publish("in/q2", b"second", qos=2, packet_id=7)
    assert p2.expect("PUBREC").packet_id == 7
    p2.ack("PUBREL", 7)
    assert p2.expect("PUBCOMP").packet_id == 7
    s.wait_for_payload(b"second")


@pytest.mark.parametrize("level", LEVELS)
def test_qos2_inbound_pubrel_only_after_reconnect(broker, clients, raw, level):
    """The publisher reconnects and goes straight to PUBREL: PUBCOMP, message delivered
    once."""
    s = clients.connect(broker, "sub", V5)
    s.sub("in/q2", 1)
    expiry = 300 if level == 5 else None
    p, _ = raw.connected(broker, "q2pub", level, clean=False, session_expiry=expiry)
    p.publish("in/q2", b"once", qos=2, packet_id=9)
    assert p.expect("PUBREC").packet_id == 9
    p.drop()
    p2, _ = raw.connected(broker, "q2pub", level, clean=False, session_expiry=expiry)
    p2.ack("PUBREL", 9)
    pubcomp = p2.expect("PUBCOMP")
    assert pubcomp.packet_id == 9 and pubcomp.reason_code == 0, pubcomp
    p2.publish("in/q2", b"marker", qos=1, packet_id=10)
    p2.expect("PUBACK")
    s.wait_for_payload(b"marker")
    assert [m.payload for m in s.before(b"marker")] == [b"once"]


# --------------------------------------------------------------------------------------------
# persistence across a broker restart


@pytest.mark.parametrize("version", VERSIONS)
def test_session_queue_and_retained_survive_restart(make_broker, clients, version):
    broker = make_broker()
    s = persistent(clients, broker, "durable", version)
    s.sub("d/#", 2)
    s.stop()
    p = clients.connect(broker, "pub", version)
    p.pub("d/1", b"queued-q1", 1)
    p.pub("d/2", b"queued-q2", 2)
    p.pub("rt/r", b"retained", 1, retain=True)
    p.stop()

    broker = make_broker.restart(broker)
    s2 = persistent(clients, broker, "durable", version)
    assert s2.session_present == [True], "persistent session lost in a restart"
    msgs = s2.wait_for_messages(2)
    assert sorted((m.payload, m.qos) for m in msgs) == [(b"queued-q1", 1), (b"queued-q2", 2)]
    p2 = clients.connect(broker, "pub", version)
    p2.pub("d/3", b"live", 1)
    s2.wait_for_payload(b"live")
    assert [m.payload for m in s2.before(b"live")].count(b"queued-q1") == 1
    fresh = clients.connect(broker, "fresh", version)
    fresh.sub("rt/r", 1)
    assert fresh.wait_for_payload(b"retained").retain


@pytest.mark.parametrize("level", LEVELS)
def test_qos2_inbound_state_survives_restart(make_broker, clients, raw, level):
    """PUBLISH QoS 2 acknowledged with PUBREC, then the broker restarts: the publisher's
    PUBREL completes the flow and the message is delivered exactly once."""
    broker = make_broker()
    expiry = 300 if level == 5 else None
    s = persistent(clients, broker, "q2-sub", V5)
    s.sub("rs/t", 1)
    s.stop()
    p, _ = raw.connected(broker, "q2-pub", level, clean=False, session_expiry=expiry)
    p.publish("rs/t", b"once", qos=2, packet_id=11)
    assert p.expect("PUBREC").packet_id == 11
    p.drop()

    broker = make_broker.restart(broker)
    s2 = persistent(clients, broker, "q2-sub", V5)
    p2, connack = raw.connected(broker, "q2-pub", level, clean=False, session_expiry=expiry)
    assert connack.session_present
    p2.publish("rs/t", b"once", qos=2, packet_id=11, dup=True)
    assert p2.expect("PUBREC").packet_id == 11
    p2.ack("PUBREL", 11)
    assert p2.expect("PUBCOMP").packet_id == 11
    p2.publish("rs/t", b"marker", qos=1, packet_id=12)
    p2.expect("PUBACK")
    s2.wait_for_payload(b"marker")
    assert [m.payload for m in s2.before(b"marker")] == [b"once"]


def test_retained_message_inflight_to_second_session_survives_restart(make_broker, clients, raw):
    """A retained QoS 1 message is delivered and acknowledged by one persistent session,
    then sent to a second persistent session that does not acknowledge it. After a restart
    the second session must get it again with DUP set [MQTT-4.4.0-1]; the broker
    acknowledged nothing that may be lost ([MQTT-4.1.0-1] session state includes QoS 1
    messages sent and not yet acknowledged)."""
    broker = make_broker()
    first = clients.connect(broker, "rr-first", V5, clean=False, session_expiry=3600)
    first.sub("rr/t", 1)
    pub = clients.connect(broker, "rr-pub", V5)
    pub.pub("rr/t", b"kept", 1, retain=True)
    first.wait_for_payload(b"kept")  # paho acknowledges it: that delivery is complete
    first.stop()  # DISCONNECT follows the PUBACK on the same stream
    broker.wait_offline("rr-first")

    second, _ = raw.connected(broker, "rr-second", 5, clean=False, session_expiry=3600)
    second.subscribe(1, [("rr/t", 1)])
    sent = second.expect("PUBLISH")
    assert sent.payload == b"kept" and sent.qos == 1
    second.drop()  # no PUBACK: the message stays inflight
    broker.wait_offline("rr-second")

    broker = make_broker.restart(broker)
    again, connack = raw.connected(broker, "rr-second", 5, clean=False, session_expiry=3600)
    assert connack.session_present
    resent = again.until_pingresp()
    assert [(p.name, p.payload, p.dup, p.packet_id) for p in resent] == [
        ("PUBLISH", b"kept", True, sent.packet_id)
    ], "unacknowledged retained message not resent after restart"


def test_session_connected_at_a_crash_expires_counting_from_the_restart(
    make_broker, clients, tmp_path
):
    """Session Expiry Interval 1: the session must be gone some time after the connection
    ends [MQTT-3.1.2-23]. A broker crash ends the connection; after the restart the
    session is still there, and it expires 1 s later by the restarted broker's clock instead
    of living forever.

    The crash is the data directory as it is on disk while the client is connected (what a
    SIGKILL leaves); two brokers start from copies of it, one per side of the deadline."""
    broker = make_broker()
    client = clients.connect(broker, "crash-sess", V5, clean=False, session_expiry=1)
    client.sub("cx/#", 1)
    client.pub("cx/sync", b"sync", 1)  # its PUBACK waits for the commit of the session
    images = [broker.disk_image(tmp_path / name) for name in ("before", "at")]

    for image, elapsed, present in zip(images, (1 - MOMENT, 1), (True, False), strict=True):
        restarted = make_broker(data_dir=image, clock=ManualClock())
        restarted.advance(elapsed)
        again = clients.connect(restarted, "crash-sess", V5, clean=False, session_expiry=60)
        assert again.session_present == [present], f"{elapsed} s after the restart"
