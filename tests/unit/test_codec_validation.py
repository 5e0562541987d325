"""Decoder validation rules, encoder short forms and encoder range checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from roost.codec import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    Properties,
    PubAck,
    Publish,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Will,
    decode_packet,
    encode,
    encode_properties,
    encode_publish,
)
from roost.codec.primitives import PROPERTY_SPECS, WILL_PROPERTIES
from roost.errors import ProtocolError, ReasonCode, UnsupportedProtocolVersion

MALFORMED = ReasonCode.MALFORMED_PACKET
PROTOCOL = ReasonCode.PROTOCOL_ERROR
UNSUPPORTED = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION


def reject(first: int, body: bytes, level: int, code: ReasonCode) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        decode_packet(first, body, level)
    assert caught.value.reason_code == code, caught.value
    return caught.value


def connect_body(
    flags: int = 0x02, level: int = 4, name: bytes | None = None, tail: bytes = b"\x00\x01c"
) -> bytes:
    """CONNECT body with keep alive 60, no properties (v5: empty section) and ``tail``."""
    if name is None:
        name = b"MQIsdp" if level == MQTT_3_1 else b"MQTT"
    props = b"\x00" if level == MQTT_5 else b""
    return len(name).to_bytes(2, "big") + name + bytes((level, flags)) + b"\x00\x3c" + props + tail


# --- fixed header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "first",
    [0x11, 0x21, 0x41, 0x5F, 0x60, 0x70 | 2, 0x80, 0x93, 0xA0, 0xB2, 0xC1, 0xD8, 0xE2, 0xF1],
)
def test_wrong_fixed_header_flags_are_malformed(first: int) -> None:
    """[MQTT-2.1.3-1]"""
    reject(first, b"\x00\x01\x00", MQTT_5, MALFORMED)


@pytest.mark.parametrize(("first", "level"), [(0x00, MQTT_5), (0xF0, MQTT_3_1_1), (0xF0, MQTT_3_1)])
def test_reserved_packet_types_are_malformed(first: int, level: int) -> None:
    reject(first, b"", level, MALFORMED)


@pytest.mark.parametrize("first", [0x36, 0x38, 0x39])
def test_publish_qos_3_and_qos_0_with_dup_are_malformed(first: int) -> None:
    """[MQTT-3.3.1-2, -4]"""
    reject(first, b"\x00\x01t\x00\x01", MQTT_3_1_1, MALFORMED)


# --- strings, lengths, packet identifiers ---------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [b"\xff", b"a\x00b", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82"],
    ids=["invalid-byte", "nul", "surrogate", "overlong", "truncated-sequence"],
)
@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
def test_bad_utf8_is_malformed(topic: bytes, level: int) -> None:
    """[MQTT-1.5.4-1, -2]"""
    props = b"\x00" if level == MQTT_5 else b""
    reject(0x30, len(topic).to_bytes(2, "big") + topic + props, level, MALFORMED)


@pytest.mark.parametrize(
    ("first", "body", "level"),
    [
        (0x30, b"\x00\x05abc", MQTT_3_1_1),  # topic overruns the body
        (0x30, b"\x00", MQTT_3_1_1),  # truncated topic length
        (0x32, b"\x00\x01t\x00", MQTT_3_1_1),  # truncated packet identifier
        (0x30, b"\x00\x01t", MQTT_5),  # missing property length
        (0x30, b"\x00\x01t\x05\x23\x00", MQTT_5),  # property length overruns
        (0x30, b"\x00\x01t\x02\x23\x00\x01", MQTT_5),  # property overruns its section
        (0x30, b"\x00\x01t\xff\xff\xff\xff\x01", MQTT_5),  # 5-byte property length
        (0x40, b"\x00\x01\x00", MQTT_3_1_1),  # trailing byte after PUBACK
        (0x40, b"\x00", MQTT_5),  # truncated packet identifier
        (0xC0, b"\x00", MQTT_3_1_1),  # PINGREQ with a body
        (0xE0, b"\x00", MQTT_3_1_1),  # DISCONNECT with a body in 3.1.1
        (0xB0, b"\x00\x01\x00", MQTT_3_1_1),  # UNSUBACK with a payload in 3.1.1
        (0x20, b"\x00", MQTT_3_1_1),  # truncated CONNACK
        (0x20, b"\x02\x00", MQTT_3_1_1),  # reserved CONNACK flag [MQTT-3.2.2-1]
        (0x82, b"\x00\x01\x00\x01a", MQTT_3_1_1),  # subscription without options
        (0x10, connect_body(tail=b"\x00\x01cX"), MQTT_3_1_1),  # trailing CONNECT byte
    ],
)
def test_truncated_overrunning_and_trailing_bytes_are_malformed(
    first: int, body: bytes, level: int
) -> None:
    reject(first, body, level, MALFORMED)


@pytest.mark.parametrize(
    ("first", "body"),
    [(0x32, b"\x00\x01t\x00\x00"), (0x40, b"\x00\x00"), (0x82, b"\x00\x00\x00\x01a\x00")],
)
def test_packet_identifier_zero_is_rejected(first: int, body: bytes) -> None:
    """[MQTT-2.2.1-3]"""
    reject(first, body, MQTT_3_1_1, MALFORMED)


def test_suback_return_codes_of_311_are_checked() -> None:
    """[MQTT-3.9.3-2]"""
    reject(0x90, b"\x00\x01\x87", MQTT_3_1_1, MALFORMED)
    assert decode_packet(0x90, b"\x00\x01\x00\x87", MQTT_5) == SubAck(1, (0x87,))


def test_publish_topic_wildcards_are_left_to_the_broker() -> None:
    assert decode_packet(0x30, b"\x00\x03a/#", MQTT_3_1_1) == Publish("a/#")


# --- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------


@pytest.mark.parametrize("level", [MQTT_3_1_1, MQTT_5])
@pytest.mark.parametrize("first", [0x82, 0xA2])
def test_subscribe_and_unsubscribe_need_a_payload(first: int, level: int) -> None:
    """[MQTT-3.8.3-3, MQTT-3.10.3-2]"""
    props = b"\x00" if level == MQTT_5 else b""
    reject(first, b"\x00\x01" + props, level, PROTOCOL)


@pytest.mark.parametrize(
    ("options", "level", "code"),
    [
        (0x03, MQTT_3_1_1, MALFORMED),  # QoS 3 [MQTT-3.8.3-4]
        (0x04, MQTT_3_1_1, MALFORMED),  # v5 option bits are reserved in 3.1.1
        (0x80, MQTT_3_1_1, MALFORMED),
        (0x03, MQTT_5, MALFORMED),
        (0x40, MQTT_5, MALFORMED),  # reserved bits [MQTT-3.8.3-5]
        (0x30, MQTT_5, PROTOCOL),  # retain handling 3
    ],
)
def test_bad_subscription_options(options: int, level: int, code: ReasonCode) -> None:
    props = b"\x00" if level == MQTT_5 else b""
    reject(0x82, b"\x00\x01" + props + b"\x00\x01a" + bytes((options,)), level, code)


def test_subscription_options_of_v5_are_decoded() -> None:
    packet = decode_packet(0x82, b"\x00\x01\x00\x00\x01a\x2e", MQTT_5)
    assert packet == Subscribe(1, (Subscription("a", 2, True, True, 2),))


# --- CONNECT --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level"),
    [(b"MQTT", 3), (b"MQTT", 6), (b"MQIsdp", 4), (b"MQTX", 4), (b"mqtt", 5), (b"", 0)],
)
def test_unknown_protocol_name_or_level(name: bytes, level: int) -> None:
    """[MQTT-3.1.2-2]"""
    error = reject(0x10, connect_body(level=level, name=name), MQTT_3_1_1, UNSUPPORTED)
    assert isinstance(error, UnsupportedProtocolVersion)
    assert error.protocol_level == level


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        (0x03, MQTT_3_1_1),  # reserved flag [MQTT-3.1.2-3]
        (0x03, MQTT_5),
        (0x0A, MQTT_3_1_1),  # Will QoS without Will Flag [MQTT-3.1.2-11]
        (0x22, MQTT_5),  # Will Retain without Will Flag [MQTT-3.1.2-13]
        (0x1E, MQTT_3_1_1),  # Will QoS 3 [MQTT-3.1.2-12]
        (0x42, MQTT_3_1_1),  # password without user name [MQTT-3.1.2-22]
        (0x42, MQTT_3_1),
    ],
)
def test_bad_connect_flags_are_malformed(flags: int, level: int) -> None:
    reject(0x10, connect_body(flags, level), MQTT_3_1_1, MALFORMED)


def test_v5_allows_a_password_without_user_name() -> None:
    body = connect_body(0x42, MQTT_5, tail=b"\x00\x01c\x00\x02pw")
    assert decode_packet(0x10, body, MQTT_3_1_1) == Connect("c", MQTT_5, password=b"pw")


def test_connect_decodes_will_properties() -> None:
    will_props = b"\x0c\x18\x00\x00\x00\x1e\x01\x01\x02\x00\x00\x00\x05"
    body = connect_body(0x2E, MQTT_5, tail=b"\x00\x01c" + will_props + b"\x00\x01w\x00\x01!")
    will = Will(
        "w",
        b"!",
        1,
        True,
        Properties(will_delay_interval=30, payload_format_indicator=1, message_expiry_interval=5),
    )
    assert decode_packet(0x10, body, MQTT_3_1_1) == Connect("c", MQTT_5, will=will)


def test_mqtt_3_1_connect_uses_mqisdp() -> None:
    wire = encode(Connect("c", MQTT_3_1), MQTT_3_1)
    assert wire[2:11] == b"\x00\x06MQIsdp\x03"
    assert decode_packet(wire[0], wire[2:], MQTT_3_1_1) == Connect("c", MQTT_3_1)


# --- v5 properties --------------------------------------------------------------------


def publish_with(props: bytes) -> bytes:
    return b"\x00\x01t" + bytes((len(props),)) + props


@pytest.mark.parametrize(
    ("props", "code"),
    [
        (b"\x7f\x00", MALFORMED),  # unknown identifier
        (b"\x18\x00\x00\x00\x01", MALFORMED),  # will delay interval is Will-only
        (b"\x11\x00\x00\x00\x01", MALFORMED),  # session expiry is not for PUBLISH
        (b"\x23\x00\x01\x23\x00\x02", PROTOCOL),  # topic alias twice
        (b"\x0b\x00", PROTOCOL),  # subscription identifier 0
        (b"\x01\x02", PROTOCOL),  # payload format indicator 2
        (b"\x03\x00\x01\xff", MALFORMED),  # content type not UTF-8
    ],
)
def test_bad_publish_properties(props: bytes, code: ReasonCode) -> None:
    reject(0x30, publish_with(props), MQTT_5, code)


def test_repeatable_properties_in_publish() -> None:
    props = b"\x0b\x01\x0b\x02" + b"\x26\x00\x01k\x00\x01v" * 2
    packet = decode_packet(0x30, publish_with(props) + b"data", MQTT_5)
    assert packet == Publish(
        "t",
        b"data",
        properties=Properties(
            subscription_identifiers=(1, 2), user_properties=(("k", "v"), ("k", "v"))
        ),
    )


def test_subscription_identifier_may_not_repeat_in_subscribe() -> None:
    reject(0x82, b"\x00\x01\x04\x0b\x01\x0b\x02\x00\x01a\x00", MQTT_5, PROTOCOL)


@pytest.mark.parametrize(
    ("props", "code"),
    [
        (b"\x04\x11\x00\x00\x00", MALFORMED),  # value overruns the section
        (b"\x0a\x11\x00\x00\x00\x01\x11\x00\x00\x00\x02", PROTOCOL),  # session expiry twice
        (b"\x03\x23\x00\x01", MALFORMED),  # topic alias is PUBLISH-only
        (b"\x03\x21\x00\x00", PROTOCOL),  # receive maximum 0
        (b"\x05\x27\x00\x00\x00\x00", PROTOCOL),  # maximum packet size 0
    ],
)
def test_bad_connect_properties(props: bytes, code: ReasonCode) -> None:
    body = b"\x00\x04MQTT\x05\x02\x00\x3c" + props + b"\x00\x01c"
    reject(0x10, body, MQTT_3_1_1, code)


SPEC_TABLE_2_2_2_2 = {
    0x01: "PUBLISH WILL",
    0x02: "PUBLISH WILL",
    0x03: "PUBLISH WILL",
    0x08: "PUBLISH WILL",
    0x09: "PUBLISH WILL",
    0x0B: "PUBLISH SUBSCRIBE",
    0x11: "CONNECT CONNACK DISCONNECT",
    0x12: "CONNACK",
    0x13: "CONNACK",
    0x15: "CONNECT CONNACK AUTH",
    0x16: "CONNECT CONNACK AUTH",
    0x17: "CONNECT",
    0x18: "WILL",
    0x19: "CONNECT",
    0x1A: "CONNACK",
    0x1C: "CONNACK DISCONNECT",
    0x1F: "CONNACK PUBACK PUBREC PUBREL PUBCOMP SUBACK UNSUBACK DISCONNECT AUTH",
    0x21: "CONNECT CONNACK",
    0x22: "CONNECT CONNACK",
    0x23: "PUBLISH",
    0x24: "CONNACK",
    0x25: "CONNACK",
    0x26: "CONNECT CONNACK PUBLISH WILL PUBACK PUBREC PUBREL PUBCOMP SUBSCRIBE SUBACK "
    "UNSUBSCRIBE UNSUBACK DISCONNECT AUTH",
    0x27: "CONNECT CONNACK",
    0x28: "CONNACK",
    0x29: "CONNACK",
    0x2A: "CONNACK",
}


def test_property_table_follows_the_spec() -> None:
    def kind(name: str) -> int:
        return WILL_PROPERTIES if name == "WILL" else PacketType[name]

    table = {spec.ident: spec.allowed for spec in PROPERTY_SPECS}
    expected = {
        ident: frozenset(map(kind, names.split())) for ident, names in SPEC_TABLE_2_2_2_2.items()
    }
    assert table == expected


# --- encoder short forms and 3.1.1 mapping --------------------------------------------


@pytest.mark.parametrize(
    ("packet", "level", "wire"),
    [
        (PubAck(5), MQTT_5, b"\x40\x02\x00\x05"),
        (PubRel(5, 0x92), MQTT_5, b"\x62\x03\x00\x05\x92"),
        (PubAck(5, 0x10), MQTT_3_1_1, b"\x40\x02\x00\x05"),
        (
            PubAck(5, properties=Properties(reason_string="r")),
            MQTT_5,
            b"\x40\x08\x00\x05\x00\x04\x1f\x00\x01r",
        ),
        (Disconnect(), MQTT_5, b"\xe0\x00"),
        (Disconnect(0x8E), MQTT_5, b"\xe0\x01\x8e"),
        (Disconnect(0x8E), MQTT_3_1_1, b"\xe0\x00"),
        (Auth(), MQTT_5, b"\xf0\x00"),
        (ConnAck(True, 0), MQTT_3_1_1, b"\x20\x02\x01\x00"),
        (ConnAck(True, 1), MQTT_3_1, b"\x20\x02\x00\x01"),
        (ConnAck(False, 0), MQTT_5, b"\x20\x03\x00\x00\x00"),
        (SubAck(3, (0, 2, 0x87, 0x80)), MQTT_3_1_1, b"\x90\x06\x00\x03\x00\x02\x80\x80"),
        (UnsubAck(3, (0x11,)), MQTT_3_1_1, b"\xb0\x02\x00\x03"),
        (UnsubAck(3, (0x11,)), MQTT_5, b"\xb0\x04\x00\x03\x00\x11"),
    ],
)
def test_encoded_forms(packet: Packet, level: int, wire: bytes) -> None:
    assert encode(packet, level) == wire


def test_encode_publish_writes_an_empty_property_section_for_v5() -> None:
    assert encode_publish(b"t", b"p", 0, True, False, 0, None, MQTT_5) == b"\x31\x05\x00\x01t\x00p"
    assert encode_publish(b"t", b"p", 1, False, True, 9, b"", MQTT_5) == (
        b"\x3a\x07\x00\x01t\x00\x09\x00p"
    )
    assert encode_publish(b"t", b"p", 0, False, False, 0, b"\x23\x00\x01", 4) == (
        b"\x30\x04\x00\x01tp"
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: encode(Publish("t", qos=1, packet_id=70000), MQTT_3_1_1),
        lambda: encode(Publish("t", qos=3, packet_id=1), MQTT_3_1_1),
        lambda: encode(Publish("a\x00b"), MQTT_3_1_1),
        lambda: encode(Publish("\ud800"), MQTT_3_1_1),
        lambda: encode(ConnAck(False, 256), MQTT_3_1_1),
        lambda: encode(Connect("c", properties=Properties(topic_alias=1)), MQTT_5),
        lambda: encode(Subscribe(1, (Subscription("a", retain_handling=3),)), MQTT_5),
        lambda: encode(Auth(), MQTT_3_1_1),
        lambda: encode_properties(Properties(receive_maximum=70000)),
        lambda: encode_properties(Properties(message_expiry_interval=-1)),
        lambda: encode_properties(Properties(subscription_identifiers=(0,))),
        lambda: encode_properties(Properties(content_type="x" * 70000)),
    ],
)
def test_encoding_out_of_range_values_raises_value_error(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()
