"""Protocol rules seen from the wire: packet identifiers, re-delivery with DUP on session
resume, the session-present flag, PINGREQ, and the client's MQTT 5 Receive Maximum."""

from __future__ import annotations

from typing import Any

from paho_helpers import V5, publish_and_wait
from rawmqtt import LEVELS, Clients, RawClient, clients_fixture
from roost.codec.packets import (
    Disconnect,
    PingReq,
    PingResp,
    PubAck,
    Publish,
    SubAck,
    Subscribe,
    Subscription,
)
from roost.codec.properties import Properties

clients = clients_fixture()


def raw_subscribe(raw: RawClient, topic: str, qos: int = 1) -> None:
    raw.send_packet(Subscribe(packet_id=7, subscriptions=(Subscription(topic, qos=qos),)))
    suback = raw.recv_packet(3)
    assert isinstance(suback, SubAck) and suback.packet_id == 7, suback
    assert suback.reason_codes == (qos,), suback


def publish_qos1(clients: Clients, broker: Any, topic: str, payloads: list[bytes]) -> None:
    pub, _ = clients.paho(broker, client_id="rules-pub", version=V5)
    for payload in payloads:
        publish_and_wait(pub, topic, payload, qos=1)


def recv_publish(raw: RawClient, timeout: float = 3.0) -> Publish:
    packet = raw.recv_packet(timeout)
    assert isinstance(packet, Publish), f"expected PUBLISH, got {packet!r}"
    return packet


@LEVELS
def test_unacknowledged_messages_have_distinct_packet_ids(
    broker: Any, clients: Clients, level: int
) -> None:
    raw = clients.raw(broker)
    raw.connect("pid-sub", level=level)
    raw_subscribe(raw, "pid/t")
    payloads = [b"m1", b"m2", b"m3"]
    publish_qos1(clients, broker, "pid/t", payloads)
    received = [recv_publish(raw) for _ in payloads]
    assert [p.payload for p in received] == payloads
    assert all(p.qos == 1 for p in received), received
    ids = [p.packet_id for p in received]
    assert all(1 <= i <= 65535 for i in ids), ids
    assert len(set(ids)) == 3, f"packet ids in use at once must differ: {ids}"


@LEVELS
def test_unacknowledged_message_resent_with_dup_on_resume(
    broker: Any, clients: Clients, level: int
) -> None:
    persistent = Properties(session_expiry_interval=60) if level == 5 else None
    first = clients.raw(broker)
    connack = first.connect("resume", level=level, clean_start=level == 5, properties=persistent)
    assert connack.reason_code == 0
    raw_subscribe(first, "resume/t")
    publish_qos1(clients, broker, "resume/t", [b"keep me"])
    original = recv_publish(first)
    assert original.qos == 1 and not original.dup, original
    first.close()  # no PUBACK

    second = clients.raw(broker)
    connack = second.connect("resume", level=level, clean_start=False, properties=persistent)
    assert connack.reason_code == 0 and connack.session_present, connack
    again = recv_publish(second)
    assert again.payload == b"keep me" and again.qos == 1, again
    assert again.dup, "a re-sent PUBLISH must have DUP=1"
    assert again.packet_id == original.packet_id, (original.packet_id, again.packet_id)
    second.send_packet(PubAck(packet_id=again.packet_id))
    second.expect_silence(0.3)
    second.send_packet(Disconnect())


@LEVELS
def test_session_present_flag(broker: Any, clients: Clients, level: int) -> None:
    persistent = Properties(session_expiry_interval=60) if level == 5 else None
    steps = [(False, False), (False, True), (True, False), (False, False)]
    for clean, expected_present in steps:
        raw = clients.raw(broker)
        props = None if clean else persistent
        connack = raw.connect("sp", level=level, clean_start=clean, properties=props)
        assert connack.reason_code == 0, connack
        assert connack.session_present == expected_present, (clean, connack)
        raw.send_packet(Disconnect())
        raw.expect_closed(3)


@LEVELS
def test_pingreq_gets_pingresp(broker: Any, clients: Clients, level: int) -> None:
    raw = clients.raw(broker)
    raw.connect("pinger", level=level)
    for _ in range(3):
        raw.send_packet(PingReq())
        assert isinstance(raw.recv_packet(2), PingResp)


def test_server_respects_client_receive_maximum(broker: Any, clients: Clients) -> None:
    raw = clients.raw(broker)
    connack = raw.connect("slow", level=5, properties=Properties(receive_maximum=2))
    assert connack.reason_code == 0
    raw_subscribe(raw, "rm/t")
    payloads = [f"m{i}".encode() for i in range(5)]
    publish_qos1(clients, broker, "rm/t", payloads)
    inflight = [recv_publish(raw), recv_publish(raw)]
    assert [p.payload for p in inflight] == payloads[:2]
    raw.expect_silence(0.5)
    raw.send_packet(PubAck(packet_id=inflight[0].packet_id))
    third = recv_publish(raw)
    assert third.payload == payloads[2] and not third.dup, third
    raw.expect_silence(0.5)
