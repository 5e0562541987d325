"""Protocol rules seen from the wire: packet identifiers, re-delivery with DUP on session
resume, the session-present flag, PINGREQ, and the client's MQTT 5 Receive Maximum."""

from __future__ import annotations

from typing import Any

from paho_helpers import V5, Clients
from rawmqtt import LEVELS, RawClient, RawFactory


def raw_subscribe(client: RawClient, topic: str, qos: int = 1) -> None:
    suback = client.subscribe(7, [(topic, qos)])
    assert suback.packet_id == 7 and suback.reason_codes == [qos], suback


def publish_qos1(clients: Clients, broker: Any, topic: str, payloads: list[bytes]) -> None:
    pub = clients.connect(broker, "rules-pub", V5)
    for payload in payloads:
        pub.pub(topic, payload, qos=1)


@LEVELS
def test_unacknowledged_messages_have_distinct_packet_ids(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    client, _ = raw.connected(broker, "pid-sub", level)
    raw_subscribe(client, "pid/t")
    payloads = [b"m1", b"m2", b"m3"]
    publish_qos1(clients, broker, "pid/t", payloads)
    received = [client.expect("PUBLISH") for _ in payloads]
    assert [p.payload for p in received] == payloads
    assert all(p.qos == 1 for p in received), received
    ids = [p.packet_id for p in received]
    assert all(1 <= i <= 65535 for i in ids), ids
    assert len(set(ids)) == 3, f"packet ids in use at once must differ: {ids}"


@LEVELS
def test_unacknowledged_message_resent_with_dup_on_resume(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    expiry = 60 if level == 5 else None  # 3.1.1: clean session 0 keeps the session
    first, _ = raw.connected(broker, "resume", level, clean=level == 5, session_expiry=expiry)
    raw_subscribe(first, "resume/t")
    publish_qos1(clients, broker, "resume/t", [b"keep me"])
    original = first.expect("PUBLISH")
    assert original.qos == 1 and not original.dup, original
    first.drop()  # no PUBACK

    second, connack = raw.connected(broker, "resume", level, clean=False, session_expiry=expiry)
    assert connack.session_present, connack
    again = second.expect("PUBLISH")
    assert again.payload == b"keep me" and again.qos == 1, again
    assert again.dup, "a re-sent PUBLISH must have DUP=1"
    assert again.packet_id == original.packet_id, (original.packet_id, again.packet_id)
    second.ack("PUBACK", again.packet_id)
    second.ping()  # nothing is re-sent once acknowledged
    second.disconnect()


@LEVELS
def test_session_present_flag(broker: Any, raw: RawFactory, level: int) -> None:
    expiry = 60 if level == 5 else None
    steps = [(False, False), (False, True), (True, False), (False, False)]
    for clean, expected_present in steps:
        client, connack = raw.connected(broker, "sp", level, clean, None if clean else expiry)
        assert connack.session_present == expected_present, (clean, connack)
        client.disconnect()
        client.wait_closed(3)


@LEVELS
def test_pingreq_gets_pingresp(broker: Any, raw: RawFactory, level: int) -> None:
    client, _ = raw.connected(broker, "pinger", level)
    for _ in range(3):
        client.ping()


def test_server_respects_client_receive_maximum(
    broker: Any, clients: Clients, raw: RawFactory
) -> None:
    client, _ = raw.connected(broker, "slow", 5, props=[("ReceiveMaximum", 2)])
    raw_subscribe(client, "rm/t")
    payloads = [f"m{i}".encode() for i in range(5)]
    publish_qos1(clients, broker, "rm/t", payloads)  # all five routed before the PINGREQ
    inflight = [client.expect("PUBLISH"), client.expect("PUBLISH")]
    assert [p.payload for p in inflight] == payloads[:2]
    client.ping()  # no third PUBLISH came before the PINGRESP
    client.ack("PUBACK", inflight[0].packet_id)
    third = client.expect("PUBLISH")
    assert third.payload == payloads[2] and not third.dup, third
    client.ping()


def test_resend_on_reconnect_respects_new_receive_maximum(
    broker: Any, clients: Clients, raw: RawFactory
) -> None:
    """The client reconnects with Receive Maximum 1 while 4 QoS 1 messages are
    unacknowledged: the server MUST NOT have more than 1 unacknowledged QoS 1 PUBLISH
    outstanding [MQTT-3.3.4-9] (Mosquitto moves the excess back to the queue)."""
    sub, _ = raw.connected(broker, "rm-sub", 5, clean=False, session_expiry=300)
    raw_subscribe(sub, "rm/t")
    payloads = [f"m{i}".encode() for i in range(4)]
    publish_qos1(clients, broker, "rm/t", payloads)
    assert [sub.expect("PUBLISH").payload for _ in payloads] == payloads
    sub.drop()
    broker.wait_offline("rm-sub")

    props = [("ReceiveMaximum", 1)]
    again, connack = raw.connected(broker, "rm-sub", 5, False, 300, props)
    assert connack.session_present
    burst = again.until_pingresp()
    assert [(p.name, p.payload) for p in burst] == [("PUBLISH", b"m0")], burst
    received = [burst[0]]
    for _ in payloads[1:]:
        again.ack("PUBACK", received[-1].packet_id)
        received.append(again.expect("PUBLISH"))
    assert [p.payload for p in received] == payloads


def test_pubrec_error_frees_the_receive_window(
    broker: Any, clients: Clients, raw: RawFactory
) -> None:
    """PUBREC with a reason code >= 0x80 ends the QoS 2 flow and no longer counts against
    the client's Receive Maximum [MQTT-3.3.4-9, 4.3.3]: with Receive Maximum 1 the next
    message follows at once, under a packet identifier that may be reused."""
    sub, _ = raw.connected(broker, "pr-sub", 5, props=[("ReceiveMaximum", 1)])
    raw_subscribe(sub, "pr/t", qos=2)
    pub = clients.connect(broker, "pr-pub", V5)
    pub.pub("pr/t", b"a", 2)
    pub.pub("pr/t", b"b", 2)
    first = sub.expect("PUBLISH")
    assert first.payload == b"a"
    sub.ack("PUBREC", first.packet_id, reason_code=0x80)
    second = sub.expect("PUBLISH")
    assert second.payload == b"b" and not second.dup
