"""Packet encoder: packet dataclass + protocol level -> wire bytes.

For levels 3 and 4 the MQTT 5-only fields (properties, most reason codes) are ignored.
For level 5 the short forms the spec allows are used [MQTT 3.4.2.1, 3.14.2.1, 3.15.2.1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from roost.codec.packets import (
    MQTT_3_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Packet,
    PacketType,
    PingReq,
    PingResp,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
)
from roost.codec.primitives import (
    FIXED_FLAGS,
    U16,
    WILL_PROPERTIES,
    encode_binary,
    encode_properties,
    encode_property_section,
    encode_string,
    encode_u8,
    encode_u16,
    encode_varint,
    utf8,
)
from roost.errors import EncodeError

_V3_SUBACK_CODES = frozenset({0x00, 0x01, 0x02})


def _frame(packet_type: PacketType, body: bytes) -> bytes:
    """Fixed header (type, flags, Remaining Length) followed by ``body`` [MQTT 2.1]."""
    first = packet_type << 4 | FIXED_FLAGS.get(packet_type, 0)
    return encode_u8(first) + encode_varint(len(body)) + body


def _check_qos(qos: int) -> None:
    if not 0 <= qos <= 2:
        raise EncodeError(f"QoS must be 0, 1 or 2, not {qos}")


def encode_publish(
    topic: bytes,
    payload: bytes,
    qos: int,
    retain: bool,
    dup: bool,
    packet_id: int,
    properties: bytes | None,
    protocol_level: int,
) -> bytes:
    """PUBLISH from pre-encoded parts: the hot path of message delivery [MQTT 3.3].

    ``properties`` is the property bytes without their length prefix (None or b"" for none).
    """
    _check_qos(qos)
    if len(topic) > 0xFFFF:
        raise EncodeError(f"topic longer than 65535 bytes: {len(topic)}")
    head = U16.pack(len(topic)) + topic
    if qos:
        head += encode_u16(packet_id)
    if protocol_level >= MQTT_5:
        head += encode_varint(len(properties)) + properties if properties else b"\x00"
    first = 0x30 | dup << 3 | qos << 1 | retain
    return b"".join((encode_u8(first), encode_varint(len(head) + len(payload)), head, payload))


def _connect(packet: Connect, level: int) -> bytes:
    """CONNECT [MQTT 3.1] at ``level`` (not ``packet.protocol_level``); 3 is "MQIsdp"."""
    if not MQTT_3_1 <= level <= MQTT_5:
        raise EncodeError(f"unknown protocol level {level}")
    flags = packet.clean_start << 1
    will = packet.will
    if will is not None:
        _check_qos(will.qos)
        flags |= 0x04 | will.qos << 3 | will.retain << 5
    if packet.password is not None:
        flags |= 0x40
    if packet.username is not None:
        flags |= 0x80
    parts = [
        b"\x00\x06MQIsdp" if level == MQTT_3_1 else b"\x00\x04MQTT",
        bytes((level, flags)),
        encode_u16(packet.keep_alive),
    ]
    if level >= MQTT_5:
        parts.append(encode_property_section(packet.properties, PacketType.CONNECT))
    parts.append(encode_string(packet.client_id))
    if will is not None:
        if level >= MQTT_5:
            parts.append(encode_property_section(will.properties, WILL_PROPERTIES))
        parts += (encode_string(will.topic), encode_binary(will.payload))
    if packet.username is not None:
        parts.append(encode_string(packet.username))
    if packet.password is not None:
        parts.append(encode_binary(packet.password))
    return _frame(PacketType.CONNECT, b"".join(parts))


def _connack(packet: ConnAck, level: int) -> bytes:
    """CONNACK [MQTT 3.2]; for level 4 ``reason_code`` is the 3.1.1 return code."""
    session_present = packet.session_present and level > MQTT_3_1
    body = bytes((session_present, packet.reason_code))
    if level >= MQTT_5:
        body += encode_property_section(packet.properties, PacketType.CONNACK)
    return _frame(PacketType.CONNACK, body)


def _publish(packet: Publish, level: int) -> bytes:
    properties = (
        encode_properties(packet.properties, PacketType.PUBLISH) if level >= MQTT_5 else None
    )
    return encode_publish(
        utf8(packet.topic),
        packet.payload,
        packet.qos,
        packet.retain,
        packet.dup,
        packet.packet_id,
        properties,
        level,
    )


def _with_reason(reason_code: int, properties: bytes) -> bytes:
    """Reason code and property section, omitting trailing defaults [MQTT 3.4.2.1]."""
    if properties:
        return encode_u8(reason_code) + encode_varint(len(properties)) + properties
    return encode_u8(reason_code) if reason_code else b""


def _ack(packet: PubAck | PubRec | PubRel | PubComp, level: int) -> bytes:
    """PUBACK, PUBREC, PUBREL and PUBCOMP share one layout [MQTT 3.4-3.7]."""
    body = encode_u16(packet.packet_id)
    if level >= MQTT_5:
        properties = encode_properties(packet.properties, packet.packet_type)
        body += _with_reason(packet.reason_code, properties)
    return _frame(packet.packet_type, body)


def _packet_id_and_properties(
    packet: Subscribe | SubAck | Unsubscribe | UnsubAck, level: int
) -> list[bytes]:
    parts = [encode_u16(packet.packet_id)]
    if level >= MQTT_5:
        parts.append(encode_property_section(packet.properties, packet.packet_type))
    return parts


def _subscribe(packet: Subscribe, level: int) -> bytes:
    """SUBSCRIBE [MQTT 3.8]; options beyond QoS exist only in MQTT 5."""
    parts = _packet_id_and_properties(packet, level)
    for sub in packet.subscriptions:
        _check_qos(sub.qos)
        options = sub.qos
        if level >= MQTT_5:
            if not 0 <= sub.retain_handling <= 2:
                raise EncodeError(f"retain handling must be 0, 1 or 2, not {sub.retain_handling}")
            options |= sub.no_local << 2 | sub.retain_as_published << 3 | sub.retain_handling << 4
        parts += (encode_string(sub.topic_filter), bytes((options,)))
    return _frame(PacketType.SUBSCRIBE, b"".join(parts))


def _suback(packet: SubAck, level: int) -> bytes:
    """SUBACK [MQTT 3.9]; for level 4 every failure code becomes return code 0x80."""
    parts = _packet_id_and_properties(packet, level)
    codes = packet.reason_codes
    if level < MQTT_5:
        codes = tuple(code if code in _V3_SUBACK_CODES else 0x80 for code in codes)
    parts.append(bytes(codes))
    return _frame(PacketType.SUBACK, b"".join(parts))


def _unsubscribe(packet: Unsubscribe, level: int) -> bytes:
    parts = _packet_id_and_properties(packet, level)
    parts += map(encode_string, packet.topic_filters)
    return _frame(PacketType.UNSUBSCRIBE, b"".join(parts))


def _unsuback(packet: UnsubAck, level: int) -> bytes:
    """UNSUBACK [MQTT 3.11]; MQTT 3.1.1 has no payload."""
    parts = _packet_id_and_properties(packet, level)
    if level >= MQTT_5:
        parts.append(bytes(packet.reason_codes))
    return _frame(PacketType.UNSUBACK, b"".join(parts))


def _empty(packet: PingReq | PingResp, level: int) -> bytes:
    return _frame(packet.packet_type, b"")


def _disconnect_or_auth(packet: Disconnect | Auth, level: int) -> bytes:
    """DISCONNECT and AUTH: reason code and properties, both optional [MQTT 3.14, 3.15]."""
    if level < MQTT_5:
        if isinstance(packet, Auth):
            raise EncodeError("AUTH exists only in MQTT 5")
        return _frame(PacketType.DISCONNECT, b"")
    properties = encode_properties(packet.properties, packet.packet_type)
    return _frame(packet.packet_type, _with_reason(packet.reason_code, properties))


_ENCODERS: dict[type[Any], Callable[[Any, int], bytes]] = {
    Connect: _connect,
    ConnAck: _connack,
    Publish: _publish,
    PubAck: _ack,
    PubRec: _ack,
    PubRel: _ack,
    PubComp: _ack,
    Subscribe: _subscribe,
    SubAck: _suback,
    Unsubscribe: _unsubscribe,
    UnsubAck: _unsuback,
    PingReq: _empty,
    PingResp: _empty,
    Disconnect: _disconnect_or_auth,
    Auth: _disconnect_or_auth,
}


def encode(packet: Packet, protocol_level: int) -> bytes:
    """Full wire bytes of ``packet`` for a connection at ``protocol_level`` (3, 4 or 5)."""
    return _ENCODERS[type(packet)](packet, protocol_level)
