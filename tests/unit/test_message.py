"""Message: expiry, cached QoS 0 encodings, properties with the remaining expiry."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.codec import MQTT_3_1, MQTT_3_1_1, MQTT_5, Framer, Properties, Publish, encode
from roost.message import Message


def decode_one(data: bytes, level: int) -> Publish:
    framer = Framer()
    framer.protocol_level = level
    framer.feed(data)
    packets = list(framer)
    assert len(packets) == 1
    packet = packets[0]
    assert isinstance(packet, Publish)
    return packet


PROPS = Properties(
    content_type="text/plain",
    correlation_data=b"\x01\x02",
    response_topic="reply/here",
    payload_format_indicator=1,
    user_properties=(("k", "v"), ("k", "w")),
)


@pytest.mark.parametrize("level", [MQTT_3_1, MQTT_3_1_1, MQTT_5])
@pytest.mark.parametrize("retain", [False, True])
def test_qos0_encoding_decodes_to_the_right_publish(level: int, retain: bool) -> None:
    message = Message("sensors/é/1", b"\x00payload", 1, not retain, PROPS, "origin")
    packet = decode_one(message.encode_qos0(level, retain, 0.0), level)
    assert packet.topic == "sensors/é/1"
    assert packet.payload == b"\x00payload"
    assert packet.qos == 0
    assert packet.retain is retain
    assert packet.dup is False
    assert packet.packet_id == 0
    if level == MQTT_5:
        assert packet.properties == PROPS
    else:
        assert packet.properties == Properties()


def test_qos0_encoding_is_cached_per_level_and_retain() -> None:
    message = Message("t", b"p", 0, False, PROPS)
    encodings = {}
    for level in (MQTT_3_1_1, MQTT_5):
        for retain in (False, True):
            first = message.encode_qos0(level, retain, 0.0)
            assert message.encode_qos0(level, retain, 123.0) is first
            encodings[level, retain] = first
    assert len(set(encodings.values())) == 4  # four distinct wire forms
    assert decode_one(encodings[MQTT_5, True], MQTT_5).retain is True
    assert decode_one(encodings[MQTT_3_1_1, False], MQTT_3_1_1).retain is False


def test_properties_bytes_are_cached_without_expiry() -> None:
    message = Message("t", b"p", 0, False, PROPS)
    assert message.properties_bytes(0.0) is message.properties_bytes(99.0)


def test_message_without_expiry_never_expires() -> None:
    message = Message("t", b"p", 0, False, now=5.0)
    assert message.expires_at is None
    assert not message.expired(1e12)


def test_expiry_is_counted_from_creation() -> None:
    message = Message("t", b"p", 1, False, Properties(message_expiry_interval=10), now=100.0)
    assert message.expires_at == 110.0
    assert not message.expired(109.999)
    assert message.expired(110.0)
    assert message.expired(200.0)


@pytest.mark.parametrize(
    ("now", "remaining"),
    [(100.0, 60), (110.0, 50), (110.5, 50), (159.0, 1), (170.0, 0)],
)
def test_expiring_message_is_encoded_with_the_remaining_interval(
    now: float, remaining: int
) -> None:
    message = Message("t", b"p", 0, False, Properties(message_expiry_interval=60), now=100.0)
    packet = decode_one(message.encode_qos0(MQTT_5, False, now), MQTT_5)
    assert packet.properties.message_expiry_interval == remaining


def test_expiring_message_is_re_encoded_per_send() -> None:
    message = Message("t", b"p", 0, False, Properties(message_expiry_interval=60), now=0.0)
    early = message.encode_qos0(MQTT_5, False, 0.0)
    later = message.encode_qos0(MQTT_5, False, 30.0)
    assert early != later
    assert decode_one(early, MQTT_5).properties.message_expiry_interval == 60
    assert decode_one(later, MQTT_5).properties.message_expiry_interval == 30
    # The other properties are kept unchanged.
    assert message.properties.message_expiry_interval == 60


def test_expiring_message_keeps_other_properties() -> None:
    props = Properties(message_expiry_interval=20, content_type="c", user_properties=(("a", "b"),))
    message = Message("t", b"p", 0, False, props, now=0.0)
    decoded = decode_one(message.encode_qos0(MQTT_5, True, 5.0), MQTT_5).properties
    assert decoded == Properties(
        message_expiry_interval=15, content_type="c", user_properties=(("a", "b"),)
    )


@given(
    interval=st.integers(1, 10**6),
    elapsed=st.floats(0, 2 * 10**6, allow_nan=False),
)
def test_remaining_interval_never_exceeds_the_truth_by_a_second(
    interval: int, elapsed: float
) -> None:
    message = Message("t", b"p", 0, False, Properties(message_expiry_interval=interval), now=0.0)
    sent = decode_one(message.encode_qos0(MQTT_5, False, elapsed), MQTT_5)
    remaining = sent.properties.message_expiry_interval
    assert remaining is not None
    true_remaining = max(0.0, interval - elapsed)
    assert 0 <= remaining <= interval
    assert remaining < true_remaining + 1
    assert remaining >= true_remaining - 1


def test_topic_alias_is_stripped_from_stored_properties() -> None:
    props = Properties(topic_alias=7, content_type="x", message_expiry_interval=None)
    message = Message("t", b"p", 1, False, props)
    assert message.properties.topic_alias is None
    assert message.properties.content_type == "x"
    packet = decode_one(message.encode_qos0(MQTT_5, False, 0.0), MQTT_5)
    assert packet.properties.topic_alias is None
    assert packet.properties.content_type == "x"
    assert b"\x23" not in message.properties_bytes(0.0)


def test_properties_without_alias_are_kept_as_given() -> None:
    message = Message("t", b"p", 1, False, PROPS)
    assert message.properties is PROPS


def test_message_fields() -> None:
    message = Message("a/b", b"x", 2, True, origin="me")
    assert (message.topic, message.topic_bytes, message.payload) == ("a/b", b"a/b", b"x")
    assert (message.qos, message.retain, message.origin, message.store_id) == (2, True, "me", 0)


def test_arrival_frame_is_reused_for_the_same_wire_format_only() -> None:
    """A QoS 0 PUBLISH is forwarded as it arrived to subscribers of its own format (3.1 and
    3.1.1 share one), and encoded anew for the other."""
    props = Properties(content_type="text/plain", user_properties=(("k", "v"),))
    arrived = encode(Publish("a/b", b"hello", properties=props), MQTT_5)
    framer = Framer()
    framer.protocol_level = MQTT_5
    framer.feed(arrived)
    packet = next(iter(framer))
    assert isinstance(packet, Publish)
    assert packet.frame == arrived
    message = Message(
        "a/b", b"hello", 0, False, packet.properties, frame=packet.frame, frame_level=5
    )
    assert message.encode_qos0(MQTT_5, False, 0.0) is packet.frame
    for level in (MQTT_3_1, MQTT_3_1_1):
        v3 = message.encode_qos0(level, False, 0.0)
        assert v3 == encode(Publish("a/b", b"hello"), MQTT_3_1_1)
    assert message.encode_qos0(MQTT_5, True, 0.0) != packet.frame  # retain flag differs
