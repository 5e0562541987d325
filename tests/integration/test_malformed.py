"""Malformed and forbidden input over a raw socket: the offending connection is closed (MQTT 5:
after a DISCONNECT carrying the reason code; 3.1.1: without a reply) and nobody else notices.

Every test keeps a healthy paho client connected across the bad input; at the end it must
still receive a message published by a fresh client after the bad connection is gone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from paho_helpers import V5, Clients
from rawmqtt import (
    LEVELS,
    Pkt,
    RawClient,
    RawFactory,
    connect_bytes,
    frame,
    publish_bytes,
    utf8,
    varint,
)


@contextmanager
def watched(clients: Clients, broker: Any) -> Iterator[None]:
    """Keep a healthy subscriber connected around the block, then prove it still works."""
    watcher = clients.connect(broker, "watcher", V5)
    watcher.sub("health/#", 1)
    yield
    clients.connect(broker, "health-pub", V5).pub("health/ping", b"still-alive", qos=1)
    watcher.wait_for_messages(1, 5)
    assert watcher.payloads() == [b"still-alive"]


def connected(raw: RawFactory, broker: Any, level: int) -> RawClient:
    client, _ = raw.connected(broker, "bad", level)
    return client


def assert_rejected(client: RawClient, level: int, *codes: int) -> None:
    """MQTT 5: the server sends DISCONNECT with one of ``codes`` and closes.
    MQTT 3.1.1: the server closes without sending anything."""
    packets = client.wait_closed(3)
    if level == 4:
        assert packets == [], f"3.1.1 connection must be closed without a reply, got {packets}"
        return
    assert packets, f"expected DISCONNECT with {[hex(c) for c in codes]}, got nothing"
    last = packets[-1]
    assert last.name == "DISCONNECT", f"expected DISCONNECT, got {packets}"
    assert last.reason_code in codes, (
        f"DISCONNECT reason {last.reason_code:#04x}, expected {[hex(c) for c in codes]}"
    )


def assert_refused_connect(packets: list[Pkt], level: int, *codes: int) -> None:
    """A bad CONNECT: closed with no reply, or (MQTT 5 only) a failing CONNACK first."""
    if level == 4 or not packets:
        assert packets == [], f"expected the connection closed without a reply, got {packets}"
        return
    assert len(packets) == 1, packets
    assert packets[0].name == "CONNACK", packets
    assert packets[0].reason_code in codes, packets


def subscribe_bytes(level: int, first_byte: int = 0x82, filters: bytes | None = None) -> bytes:
    body = (1).to_bytes(2, "big")
    if level == 5:
        body += b"\x00"
    if filters is None:
        filters = utf8("a/b") + b"\x00"
    return frame(first_byte, body + filters)


# --- packets after a successful CONNECT ------------------------------------------------------


@LEVELS
def test_remaining_length_of_five_bytes(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send(b"\x30\xff\xff\xff\xff\x7f")
        assert_rejected(client, level, 0x81)


@LEVELS
@pytest.mark.parametrize(
    "make_bytes",
    [
        lambda level: subscribe_bytes(level, first_byte=0x80),
        lambda level: frame(0x41, (1).to_bytes(2, "big")),
        lambda level: frame(0xC1, b""),
    ],
    ids=["subscribe-flags-0", "puback-flags-1", "pingreq-flags-1"],
)
def test_reserved_fixed_header_flags(
    broker: Any, clients: Clients, raw: RawFactory, level: int, make_bytes: Callable[[int], bytes]
) -> None:
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send(make_bytes(level))
        assert_rejected(client, level, 0x81)


@LEVELS
def test_second_connect(broker: Any, clients: Clients, raw: RawFactory, level: int) -> None:
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send_connect("bad")
        assert_rejected(client, level, 0x82)


@LEVELS
def test_packet_over_max_packet_size(
    make_broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    broker = make_broker(max_packet_size=1024)
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send(publish_bytes(b"big/topic", b"x" * 2000, level=level))
        assert_rejected(client, level, 0x95)


@LEVELS
def test_invalid_utf8_topic(broker: Any, clients: Clients, raw: RawFactory, level: int) -> None:
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send(publish_bytes(b"ok/\xff\xfe", level=level))
        assert_rejected(client, level, 0x81)


@LEVELS
@pytest.mark.parametrize("topic", [b"a/+/b", b"a/#"])
def test_wildcard_in_publish_topic(
    broker: Any, clients: Clients, raw: RawFactory, level: int, topic: bytes
) -> None:
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send(publish_bytes(topic, level=level))
        assert_rejected(client, level, 0x90)


@LEVELS
def test_publish_qos_3(broker: Any, clients: Clients, raw: RawFactory, level: int) -> None:
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send(publish_bytes(b"a/b", level=level, qos=3))
        assert_rejected(client, level, 0x81)


@LEVELS
def test_publish_empty_topic_without_alias(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send(publish_bytes(b"", level=level))
        assert_rejected(client, level, 0x82)


@LEVELS
def test_subscribe_without_filters(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.send(subscribe_bytes(level, filters=b""))
        assert_rejected(client, level, 0x82, 0x81)


def test_receive_maximum_exceeded(make_broker: Any, clients: Clients, raw: RawFactory) -> None:
    """QoS 2 PUBLISHes stay unacknowledged until PUBREL: the third one exceeds the quota of 2."""
    broker = make_broker(receive_maximum=2)
    with watched(clients, broker):
        client, connack = raw.connected(broker, "bad", 5)
        assert connack.props["ReceiveMaximum"] == 2
        for packet_id in (1, 2):
            client.send(publish_bytes(b"rm/t", level=5, qos=2, packet_id=packet_id))
            reply = client.expect("PUBREC", 3)
            assert reply.packet_id == packet_id and reply.reason_code < 0x80, reply
        client.send(publish_bytes(b"rm/t", level=5, qos=2, packet_id=3))
        assert_rejected(client, 5, 0x93)


@LEVELS
def test_pubrel_for_unknown_packet_id(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    """Not a connection error: PUBCOMP (MQTT 5: reason 0x92) and the connection stays up."""
    with watched(clients, broker):
        client = connected(raw, broker, level)
        client.ack("PUBREL", 42)
        reply = client.expect("PUBCOMP", 3)
        assert reply.packet_id == 42, reply
        if level == 5:
            assert reply.reason_code == 0x92, reply
        client.ping()


@pytest.mark.parametrize("alias", ["zero", "above-maximum"])
def test_invalid_topic_alias(
    make_broker: Any, clients: Clients, raw: RawFactory, alias: str
) -> None:
    broker = make_broker(topic_alias_maximum=3)
    with watched(clients, broker):
        client, connack = raw.connected(broker, "bad", 5)
        assert connack.props["TopicAliasMaximum"] == 3
        value = 0 if alias == "zero" else 4
        client.send(
            publish_bytes(b"alias/t", level=5, properties=b"\x23" + value.to_bytes(2, "big"))
        )
        assert_rejected(client, 5, 0x94)


def test_auth_packet_without_auth_method(broker: Any, clients: Clients, raw: RawFactory) -> None:
    """The CONNECT had no Authentication Method, so an AUTH is a Protocol Error (0x82)."""
    with watched(clients, broker):
        client = connected(raw, broker, 5)
        props = b"\x15" + utf8("SCRAM-SHA-1")
        client.send(frame(0xF0, b"\x18" + varint(len(props)) + props))
        assert_rejected(client, 5, 0x82)


# --- bad CONNECTs ----------------------------------------------------------------------------


def test_connect_with_authentication_method(broker: Any, clients: Clients, raw: RawFactory) -> None:
    with watched(clients, broker):
        client = raw(broker, 5)
        connack = client.connect("bad", props=[("AuthenticationMethod", "SCRAM-SHA-1")])
        assert connack is not None and connack.name == "CONNACK", connack
        assert connack.reason_code == 0x8C, connack
        assert client.wait_closed(3) == []


def test_first_packet_not_connect(broker: Any, clients: Clients, raw: RawFactory) -> None:
    with watched(clients, broker):
        client = raw(broker)
        client.send(b"\xc0\x00")
        assert client.read_until_closed(3) == b""


@LEVELS
def test_connect_reserved_flag_set(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    with watched(clients, broker):
        client = raw(broker, level)
        client.send(connect_bytes(level=level, flags=0x02 | 0x01))
        assert_refused_connect(client.wait_closed(3), level, 0x81)


@LEVELS
def test_connect_will_qos_without_will_flag(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    with watched(clients, broker):
        client = raw(broker, level)
        client.send(connect_bytes(level=level, flags=0x02 | 0x08))
        assert_refused_connect(client.wait_closed(3), level, 0x81, 0x82)


def test_unknown_protocol_level_6(broker: Any, clients: Clients, raw: RawFactory) -> None:
    """A CONNECT shaped like MQTT 5 but with level 6: CONNACK 0x84 in the MQTT 5 layout."""
    with watched(clients, broker):
        client = raw(broker)
        client.send(connect_bytes(level=6))
        data = client.read_until_closed(3)
        assert data[:1] == b"\x20" and len(data) >= 5, data
        assert data[1] == len(data) - 2 >= 3, f"not an MQTT 5 CONNACK: {data!r}"
        assert data[2:4] == b"\x00\x84", data


def test_unknown_protocol_level_7_in_311_shape(
    broker: Any, clients: Clients, raw: RawFactory
) -> None:
    """A 3.1.1-shaped CONNECT with level 7: refused and closed. 3.1.1 asks for return code 1;
    the level alone does not tell the server which CONNACK layout the client reads, so the
    MQTT 5 layout with 0x84 is accepted as well."""
    with watched(clients, broker):
        client = raw(broker)
        client.send(connect_bytes(level=7))
        data = client.read_until_closed(3)
        assert data == b"\x20\x02\x00\x01" or data[2:4] == b"\x00\x84", data


def test_mqtt_3_1_mqisdp_accepted(broker: Any, clients: Clients, raw: RawFactory) -> None:
    """MQTT 3.1 (protocol name 'MQIsdp', level 3) is accepted and can publish."""
    sub = clients.connect(broker, "mqtt31-sub", V5)
    sub.sub("legacy/t", 0)
    client = raw(broker, 3)
    client.send(connect_bytes("mqtt31", level=3, name=b"MQIsdp"))
    connack = client.expect("CONNACK", 3)
    assert connack.reason_code == 0, connack
    client.send(publish_bytes(b"legacy/t", b"from 3.1", level=3))
    client.ping()
    sub.wait_for_messages(1, 3)
    assert sub.payloads() == [b"from 3.1"]
    client.disconnect()
