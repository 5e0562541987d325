"""Protocol review findings: the first group reproduces bugs found against MQTT 5.0 / 3.1.1
(now fixed; each docstring cites the rule); the second pins down subtle behaviour that was
checked and found right.

The raw-socket tests use ``raw`` (tests/integration/conftest.py) for byte-level flows and
``rawmqtt.RawClient`` where a will has to be set in CONNECT.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties

from brokerproc import BrokerProcess
from paho_helpers import V5, wait_until
from rawmqtt import clients_fixture, frame
from roost.codec import encode
from roost.codec.packets import Disconnect, Publish, Will
from roost.codec.properties import Properties

# --------------------------------------------------------------------------------------------
# helpers


def restart(make_broker: Callable[..., Any], running: Any) -> Any:
    """Stop ``running`` gracefully and start a broker on the same data directory."""
    settings = running.settings
    running.stop()
    running.stop = lambda: None  # already stopped; the fixture's teardown calls it again
    return make_broker(data_dir=settings.data_dir)


def collect(client: Any, seconds: float) -> list[Any]:
    """Every packet a ``raw`` client receives within ``seconds`` (stops early on close)."""
    got: list[Any] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            pkt = client.recv_or_close(remaining)
        except AssertionError:  # nothing more within the window
            break
        if pkt is None:
            break
        got.append(pkt)
    return got


def wire_size(pkt: Any) -> int:
    """Size on the wire of a packet decoded by the ``raw`` client."""
    return len(frame(pkt.flags, pkt.body))


def expiring(seconds: int) -> PahoProperties:
    """PUBLISH properties with a Message Expiry Interval."""
    props = PahoProperties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = seconds
    return props


def elapse(seconds: float) -> None:
    """Let ``seconds`` of broker time pass (expiry tests), as a bounded wait."""
    start = time.monotonic()
    wait_until(lambda: time.monotonic() - start > seconds, seconds + 5, f"{seconds}s to pass")


codec_clients = clients_fixture("codec_clients")


# --------------------------------------------------------------------------------------------
# bugs found in review (fixed)


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
    core = broker.broker.core
    wait_until(lambda: not core.is_online("rr-first"), what="rr-first offline")

    second, _ = raw.connected(broker, "rr-second", 5, clean=False, session_expiry=3600)
    second.subscribe(1, [("rr/t", 1)])
    sent = second.expect("PUBLISH")
    assert sent.payload == b"kept" and sent.qos == 1
    second.drop()  # no PUBACK: the message stays inflight
    wait_until(lambda: not core.is_online("rr-second"), what="rr-second offline")

    broker = restart(make_broker, broker)
    again, connack = raw.connected(broker, "rr-second", 5, clean=False, session_expiry=3600)
    assert connack.session_present
    publishes = [p for p in collect(again, 3.0) if p.name == "PUBLISH"]
    assert [(p.payload, p.dup, p.packet_id) for p in publishes] == [
        (b"kept", True, sent.packet_id)
    ], "unacknowledged retained message not resent after restart"


def test_session_connected_at_crash_still_expires(tmp_path: Path, clients) -> None:
    """Session Expiry Interval 1: the session must be gone some time after the connection
    ends [MQTT-3.1.2-23]. A broker crash ends the connection; after the restart the
    session must expire (at the latest counting from the restart), not live forever."""
    process = BrokerProcess(tmp_path / "data").start()
    try:
        client = clients.connect(process, "crash-sess", V5, clean=False, session_expiry=1)
        client.sub("cx/#", 1)
        process.kill()
        client.client.loop_stop()
        process.start()
        elapse(2.5)
        again = clients.connect(process, "crash-sess", V5, clean=False, session_expiry=60)
        assert again.session_present == [False], (
            "session with expiry 1 s still present 2.5 s after the restart"
        )
    finally:
        process.kill()


def test_resend_on_reconnect_respects_new_receive_maximum(broker, clients, raw):
    """The client reconnects with Receive Maximum 1 while 4 QoS 1 messages are
    unacknowledged: the server MUST NOT have more than 1 unacknowledged QoS 1 PUBLISH
    outstanding [MQTT-3.3.4-9] (Mosquitto moves the excess back to the queue)."""
    sub, _ = raw.connected(broker, "rm-sub", 5, clean=False, session_expiry=300)
    sub.subscribe(1, [("rm/t", 1)])
    pub = clients.connect(broker, "rm-pub", V5)
    for i in range(4):
        pub.pub("rm/t", f"m{i}".encode(), 1)
    first = [sub.expect("PUBLISH") for _ in range(4)]
    assert [p.payload for p in first] == [b"m0", b"m1", b"m2", b"m3"]
    sub.drop()
    wait_until(lambda: not broker.broker.core.is_online("rm-sub"), what="rm-sub offline")

    again = raw(broker, 5)
    connack = again.connect(
        "rm-sub", clean=False, session_expiry=300, props=[("ReceiveMaximum", 1)]
    )
    assert connack is not None and connack.session_present
    burst = [p for p in collect(again, 1.0) if p.name == "PUBLISH"]
    assert len(burst) <= 1, f"{len(burst)} unacknowledged PUBLISH with Receive Maximum 1"


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
    wait_until(lambda: not broker.broker.core.is_online("mp-sub"), what="mp-sub offline")

    again = raw(broker, 5)
    connack = again.connect(
        "mp-sub", clean=False, session_expiry=300, props=[("MaximumPacketSize", 64)]
    )
    assert connack is not None and connack.session_present
    sizes = [wire_size(p) for p in collect(again, 1.0)]
    assert all(size <= 64 for size in sizes), f"packets of {sizes} bytes sent, maximum 64"


def test_expired_queued_messages_do_not_crowd_out_fresh_ones(make_broker, clients):
    """Messages whose Message Expiry Interval has passed MUST be deleted for an offline
    subscriber [MQTT-3.3.2-5]; they must not fill the queue (max 2 here) so that a fresh
    message published afterwards is dropped."""
    broker = make_broker(max_queued_messages=2)
    sub = clients.connect(broker, "xq-sub", V5, clean=False, session_expiry=300)
    sub.sub("xq/t", 1)
    sub.stop()
    pub = clients.connect(broker, "xq-pub", V5)
    for i in range(2):
        pub.pub("xq/t", f"short{i}".encode(), 1, properties=expiring(1))
    elapse(2.0)
    pub.pub("xq/t", b"fresh", 1)
    again = clients.connect(broker, "xq-sub", V5, clean=False, session_expiry=300)
    assert again.session_present == [True]
    again.wait_for_payload(b"fresh", timeout=3)
    assert b"short0" not in again.payloads() and b"short1" not in again.payloads()


def test_will_survives_graceful_shutdown(make_broker, clients, codec_clients):
    """The server closing the connection without having received DISCONNECT 0x00 is one of
    the situations in which the will MUST be published, after its delay or when the
    session ends [MQTT-3.1.2-8]. With a 1 s will delay and a 300 s session, the retained
    will must exist some time after a shutdown and restart."""
    broker = make_broker()
    device = codec_clients.raw(broker)
    will = Will(
        "sd/status", b"offline", qos=1, retain=True, properties=Properties(will_delay_interval=1)
    )
    connack = device.connect(
        "sd-dev", level=5, will=will, properties=Properties(session_expiry_interval=300)
    )
    assert connack.reason_code == 0
    broker = restart(make_broker, broker)
    elapse(2.0)
    watcher = clients.connect(broker, "sd-watch", V5)
    watcher.sub("sd/status", 1)
    assert watcher.wait_for_payload(b"offline", timeout=3).retain


# --------------------------------------------------------------------------------------------
# verified behaviour (these pass)


def test_takeover_sends_0x8e_and_publishes_will_once(broker, clients, codec_clients):
    """Takeover: the old connection gets DISCONNECT 0x8E [MQTT-3.1.4-3] and, the server
    having closed it without DISCONNECT 0x00, its will (delay 0) goes out exactly once
    [MQTT-3.1.2-8]; the resumed session is present."""
    watcher = clients.connect(broker, "tw-watch", V5)
    watcher.sub("tw/#", 1)
    old = codec_clients.raw(broker)
    will = Will("tw/status", b"gone", qos=1)
    props = Properties(session_expiry_interval=300)
    assert old.connect("tw-dev", level=5, will=will, properties=props).reason_code == 0
    new = codec_clients.raw(broker)
    connack = new.connect("tw-dev", level=5, clean_start=False, properties=props)
    assert connack.reason_code == 0 and connack.session_present
    closing = old.expect_closed()
    assert [type(p) for p in closing] == [Disconnect] and closing[0].reason_code == 0x8E
    watcher.wait_for_payload(b"gone")
    new.send_packet(Disconnect())
    marker = clients.connect(broker, "tw-pub", V5)
    marker.pub("tw/marker", b"marker", 1)
    watcher.wait_for_payload(b"marker")
    assert watcher.payloads().count(b"gone") == 1


def test_takeover_within_will_delay_suppresses_will(broker, clients, codec_clients):
    """A new connection to the session before the Will Delay Interval has passed: the will
    MUST NOT be sent [MQTT-3.1.3-9], even though the old connection was taken over."""
    watcher = clients.connect(broker, "td-watch", V5)
    watcher.sub("td/#", 1)
    old = codec_clients.raw(broker)
    will = Will("td/status", b"gone", qos=1, properties=Properties(will_delay_interval=1))
    props = Properties(session_expiry_interval=300)
    assert old.connect("td-dev", level=5, will=will, properties=props).reason_code == 0
    new = codec_clients.raw(broker)
    assert new.connect("td-dev", level=5, clean_start=False, properties=props).session_present
    old.expect_closed()
    elapse(1.8)
    marker = clients.connect(broker, "td-pub", V5)
    marker.pub("td/marker", b"marker", 1)
    watcher.wait_for_payload(b"marker")
    assert watcher.payloads() == [b"marker"]


def test_bytes_after_disconnect_are_ignored(broker, clients, codec_clients):
    """After DISCONNECT the server closes the connection and acts on nothing more from it
    [MQTT-3.14.4-1, -2]: a PUBLISH in the same segment is not routed, no will is sent."""
    watcher = clients.connect(broker, "ad-watch", V5)
    watcher.sub("ad/#", 0)
    client = codec_clients.raw(broker)
    will = Will("ad/will", b"will", qos=0)
    assert client.connect("ad-dev", level=5, will=will).reason_code == 0
    tail = encode(Publish("ad/after", b"after", 0, False, False, 0), 5)
    client.send(encode(Disconnect(), 5) + tail)
    assert client.expect_closed() == []
    marker = clients.connect(broker, "ad-pub", V5)
    marker.pub("ad/marker", b"marker", 1)
    watcher.wait_for_payload(b"marker")
    assert watcher.payloads() == [b"marker"]


def test_disconnect_raising_session_expiry_from_zero_is_protocol_error(
    broker, clients, codec_clients
):
    """Session Expiry Interval 0 in CONNECT and non-zero in DISCONNECT is a Protocol Error
    [MQTT-3.14.2-2]: the server answers DISCONNECT 0x82 and the will is published."""
    watcher = clients.connect(broker, "pe-watch", V5)
    watcher.sub("pe/#", 1)
    client = codec_clients.raw(broker)
    will = Will("pe/will", b"will", qos=1)
    assert client.connect("pe-dev", level=5, will=will).reason_code == 0
    client.send_packet(Disconnect(0, Properties(session_expiry_interval=60)))
    closing = client.expect_closed()
    assert [(type(p), p.reason_code) for p in closing] == [(Disconnect, 0x82)]
    watcher.wait_for_payload(b"will")


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
    wait_until(lambda: not broker.broker.core.is_online("pv-sub"), what="pv-sub offline")
    v3, connack = raw.connected(broker, "pv-sub", 4, clean=False)
    assert connack.session_present
    resent = v3.expect("PUBLISH")
    assert (resent.payload, resent.dup, resent.packet_id) == (b"once", True, sent.packet_id)
    v3.ack("PUBACK", resent.packet_id)


def test_pubrec_error_frees_the_receive_window(broker, clients, raw):
    """PUBREC with a reason code >= 0x80 ends the QoS 2 flow and no longer counts against
    the client's Receive Maximum [MQTT-3.3.4-9, 4.3.3]: with Receive Maximum 1 the next
    message follows at once, under a packet identifier that may be reused."""
    sub = raw(broker, 5)
    connack = sub.connect("pr-sub", props=[("ReceiveMaximum", 1)])
    assert connack is not None and connack.reason_code == 0
    sub.subscribe(1, [("pr/t", 2)])
    pub = clients.connect(broker, "pr-pub", V5)
    pub.pub("pr/t", b"a", 2)
    pub.pub("pr/t", b"b", 2)
    first = sub.expect("PUBLISH")
    assert first.payload == b"a"
    sub.send(bytes([0x50, 3]) + first.packet_id.to_bytes(2, "big") + b"\x80")
    second = sub.expect("PUBLISH")
    assert second.payload == b"b" and not second.dup
