"""Inbox entries between nodes: the time an entry waited in the stream counts toward the
expiry of its messages; bad entries are refused."""

from __future__ import annotations

import pytest

from roost.cluster.wire import (
    CHECK,
    FRAME,
    GROUPS,
    PUBLISH,
    Check,
    ForGroups,
    Relayed,
    decode_batch,
    decode_entry,
    encode_publish,
    inbox_entry,
)
from roost.codec import MQTT_3_1_1, MQTT_5, NO_PROPERTIES, encode_properties
from roost.codec import encode_publish as encode_mqtt_publish
from roost.codec.properties import Properties
from roost.errors import MalformedPacket
from roost.message import Message


def relayed_after(waited: float, expiry: int, now: float = 50.0) -> Message:
    message = Message("t", b"x", 1, False, Properties(message_expiry_interval=expiry), now=0.0)
    fields = inbox_entry(encode_publish(message, (), 0.0), wall_now=1000.0)
    (record,) = decode_entry(fields, now, wall_now=1000.0 + waited)
    assert isinstance(record, Message)  # no shared group to serve: no Relayed around it
    return record


def test_a_message_expires_counting_from_when_its_entry_was_sent() -> None:
    assert relayed_after(3.0, 10).expires_at == 47.0 + 10
    assert relayed_after(3.0, 10).expired(57.0)


def test_an_entry_from_a_clock_ahead_of_the_readers_does_not_extend_the_expiry() -> None:
    assert relayed_after(-5.0, 10).expires_at == 50.0 + 10


@pytest.mark.parametrize(
    "fields", [{b"t": b"1000.0"}, {b"b": b"", b"t": b"soon"}], ids=["no batch", "bad time"]
)
def test_a_bad_entry_is_refused(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(MalformedPacket):
        list(decode_entry(fields, 0.0, 0.0))


RICH = Message(
    "plant/7/temperature",
    b"\x00\xff payload",
    2,
    True,
    Properties(content_type="text/plain", user_properties=(("k", "v"), ("k", "w"))),
    origin="sensor-7",
)


def test_a_relayed_message_arrives_with_every_field() -> None:
    (record,) = decode_batch(encode_publish(RICH, ("$share/g/plant/#",), 0.0), 0.0)
    assert isinstance(record, Relayed)
    message = record.message
    assert (message.topic, message.payload, message.qos, message.retain, message.origin) == (
        RICH.topic,
        RICH.payload,
        RICH.qos,
        RICH.retain,
        RICH.origin,
    )
    assert message.properties == RICH.properties
    assert record.shared == {"$share/g/plant/#"}


def test_records_of_one_batch_come_in_order_with_their_kinds() -> None:
    plain = Message("a", b"1", 0, False)
    batch = b"".join(
        [
            encode_publish(plain, (), 0.0),
            encode_publish(RICH, ("$share/g/#",), 0.0, GROUPS),
            encode_publish(RICH, (), 0.0, CHECK),
        ]
    )
    first, groups, check = decode_batch(batch, 0.0)
    assert isinstance(first, Message) and first.topic == "a"
    assert isinstance(groups, ForGroups) and groups.groups == {"$share/g/#"}
    assert isinstance(check, Check) and check.request.properties == RICH.properties


def test_every_truncation_of_a_record_is_refused_as_malformed() -> None:
    record = encode_publish(RICH, ("$share/g/plant/#",), 0.0)
    for end in range(1, len(record)):
        with pytest.raises(MalformedPacket):
            list(decode_batch(record[:end], 0.0))


def test_a_topic_that_is_not_utf8_is_refused_as_malformed() -> None:
    record = encode_publish(Message("ab", b"", 0, False), (), 0.0)
    broken = record.replace(b"ab", b"\xff\xfe", 1)
    with pytest.raises(MalformedPacket):
        list(decode_batch(broken, 0.0))


def arrived(level: int, retain: bool = False, properties: Properties = NO_PROPERTIES) -> Message:
    """A QoS 0 message as a broker makes it from the PUBLISH packet it arrived in."""
    props = encode_properties(properties) if level == MQTT_5 else None
    frame = encode_mqtt_publish(b"plant/7", b"21.5", 0, retain, False, 0, props, level)
    return Message("plant/7", b"21.5", 0, retain, properties, "sensor-7", 0.0, frame, level)


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
def test_a_message_that_arrived_as_a_packet_is_relayed_as_that_packet(level: int) -> None:
    properties = Properties(content_type="text/plain") if level == MQTT_5 else NO_PROPERTIES
    message = arrived(level, retain=True, properties=properties)
    record = encode_publish(message, ("$share/g/plant/#",), 0.0)
    assert record[0] == FRAME
    (relayed,) = decode_batch(record, 0.0)
    assert isinstance(relayed, Relayed) and relayed.shared == {"$share/g/plant/#"}
    copy = relayed.message
    assert (copy.topic, copy.payload, copy.qos, copy.retain, copy.origin) == (
        "plant/7",
        b"21.5",
        0,
        True,
        "sensor-7",
    )
    assert copy.properties == message.properties
    # sent on as it is, to subscribers of its MQTT version
    frame = message.encoded_frame()
    assert frame is not None
    assert copy.encode_qos0(level, True, 0.0) is not frame[0]
    assert copy.encode_qos0(level, True, 0.0) == frame[0]


def test_a_message_that_expires_is_relayed_field_by_field() -> None:
    expiring = Message("t", b"x", 0, False, Properties(message_expiry_interval=60), now=0.0)
    expiring.encode_qos0(MQTT_5, False, 0.0)  # a packet at hand, with an interval that runs
    assert encode_publish(expiring, (), 0.0)[0] == PUBLISH


def test_every_truncation_of_a_packet_record_is_refused_as_malformed() -> None:
    record = encode_publish(arrived(MQTT_5), ("$share/g/plant/#",), 0.0)
    assert record[0] == FRAME
    for end in range(1, len(record)):
        with pytest.raises(MalformedPacket):
            list(decode_batch(record[:end], 0.0))


def test_a_packet_record_holding_anything_but_a_qos0_publish_is_refused() -> None:
    record = encode_publish(arrived(MQTT_3_1_1), (), 0.0)
    qos1 = encode_mqtt_publish(b"plant/7", b"21.5", 1, False, False, 9, None, MQTT_3_1_1)
    broken = record.replace(
        encode_mqtt_publish(b"plant/7", b"21.5", 0, False, False, 0, None, MQTT_3_1_1), qos1
    )
    broken = broken.replace(b"\x00\x00\x00\x0f", len(qos1).to_bytes(4, "big"), 1)
    with pytest.raises(MalformedPacket):
        list(decode_batch(broken, 0.0))


def test_a_message_with_properties_is_not_relayed_as_a_packet_without_them() -> None:
    """Its MQTT 3.1.1 packet (made for a 3.1.1 subscriber) has no properties."""
    message = Message("t", b"x", 0, False, Properties(content_type="text/plain"))
    message.encode_qos0(MQTT_3_1_1, False, 0.0)
    (relayed,) = decode_batch(encode_publish(message, (), 0.0), 0.0)
    assert isinstance(relayed, Message)
    assert relayed.properties.content_type == "text/plain"


@pytest.mark.parametrize("frame", [b"", b"\x30\x00"], ids=["empty", "header only"])
def test_a_packet_record_without_a_packet_body_is_refused_as_malformed(frame: bytes) -> None:
    message = arrived(MQTT_3_1_1)
    packet = message.encoded_frame()
    assert packet is not None
    record = encode_publish(message, (), 0.0)
    # kind, flags, origin, fixed-header length; then the packet's size, the packet and
    # the count of shared filters
    head = record[: len(record) - len(packet[0]) - 6]
    broken = head + len(frame).to_bytes(4, "big") + frame + b"\x00\x00"
    with pytest.raises(MalformedPacket):
        list(decode_batch(broken, 0.0))


@pytest.mark.parametrize("payload_size", [0, 200, 20_000], ids=["empty", "3-byte header", "big"])
@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
@pytest.mark.parametrize("retain", [False, True], ids=["live", "retained"])
def test_a_packet_record_without_properties_comes_back_whole(
    level: int, payload_size: int, retain: bool
) -> None:
    """Read without the packet decoder; its fixed header is 2 bytes up to 129 in all."""
    payload = bytes(range(256)) * (payload_size // 256) + b"x" * (payload_size % 256)
    props = b"" if level == MQTT_5 else None
    frame = encode_mqtt_publish(b"plant/7", payload, 0, retain, False, 0, props, level)
    message = Message("plant/7", payload, 0, retain, NO_PROPERTIES, "sensor-7", 0.0, frame, level)
    (copy,) = decode_batch(encode_publish(message, (), 0.0), 0.0)
    assert isinstance(copy, Message)
    fields = (copy.topic, copy.topic_bytes, copy.payload, copy.qos, copy.retain, copy.origin)
    assert fields == ("plant/7", b"plant/7", payload, 0, retain, "sensor-7")
    assert (copy.properties, copy.expires_at) == (NO_PROPERTIES, None)
    assert copy.encode_qos0(level, retain, 0.0) == frame


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
def test_a_packet_record_whose_topic_overruns_its_packet_is_refused(level: int) -> None:
    record = encode_publish(arrived(level), (), 0.0)
    broken = record.replace(b"\x00\x07plant/7", b"\x00\x7fplant/7", 1)
    assert broken != record
    with pytest.raises(MalformedPacket):
        list(decode_batch(broken, 0.0))
