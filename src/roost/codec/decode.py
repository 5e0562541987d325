"""Packet decoder: fixed-header first byte + body -> packet dataclass, fully validated.

Every failure raises a :class:`ProtocolError` subclass carrying the MQTT 5 reason code;
topic-name and topic-filter syntax is left to the broker.
"""

from __future__ import annotations

from collections.abc import Callable

from roost.codec.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
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
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
)
from roost.codec.primitives import (
    FIXED_FLAGS,
    WILL_PROPERTIES,
    decode_utf8,
    read_binary,
    read_properties,
    read_string,
    read_u8,
    read_u16,
)
from roost.codec.properties import NO_PROPERTIES, Properties
from roost.errors import MalformedPacket, ProtocolError, UnsupportedProtocolVersion

_PROTOCOL_NAMES = {MQTT_3_1: b"MQIsdp", MQTT_3_1_1: b"MQTT", MQTT_5: b"MQTT"}
_V3_SUBACK_CODES = frozenset({0x00, 0x01, 0x02, 0x80})


def _expect_end(body: bytes, pos: int, packet_type: PacketType) -> None:
    if pos != len(body):
        raise MalformedPacket(
            f"{len(body) - pos} unexpected bytes at the end of {packet_type.name}"
        )


def _packet_id(body: bytes, pos: int) -> tuple[int, int]:
    """A Packet Identifier, which must be non-zero [MQTT-2.2.1-3]."""
    packet_id, pos = read_u16(body, pos, "packet identifier")
    if not packet_id:
        raise MalformedPacket("packet identifier 0 [MQTT-2.2.1-3]")
    return packet_id, pos


def _properties(body: bytes, pos: int, level: int, kind: int) -> tuple[Properties, int]:
    """The property section for MQTT 5, nothing for earlier levels."""
    if level < MQTT_5:
        return NO_PROPERTIES, pos
    return read_properties(body, pos, kind)


def _connect(first: int, body: bytes, level: int) -> Connect:
    """CONNECT [MQTT 3.1]; the level comes from its own variable header."""
    name, pos = read_binary(body, 0, "protocol name")
    level, pos = read_u8(body, pos, "protocol level")
    if _PROTOCOL_NAMES.get(level) != name:
        raise UnsupportedProtocolVersion(
            f"unsupported protocol name {name!r} with level {level} [MQTT-3.1.2-2]", level
        )
    flags, pos = read_u8(body, pos, "connect flags")
    if flags & 0x01:
        raise MalformedPacket("CONNECT reserved flag is set [MQTT-3.1.2-3]")
    has_will = flags & 0x04
    will_qos = flags >> 3 & 0x03
    will_retain = bool(flags & 0x20)
    if not has_will and (will_qos or will_retain):
        raise MalformedPacket("Will QoS or Will Retain set without Will Flag [MQTT-3.1.2-11,-13]")
    if will_qos == 3:
        raise MalformedPacket("Will QoS 3 [MQTT-3.1.2-12]")
    has_password = flags & 0x40
    has_username = flags & 0x80
    if level < MQTT_5 and has_password and not has_username:
        raise MalformedPacket("password flag set without user name flag [MQTT-3.1.2-22]")
    keep_alive, pos = read_u16(body, pos, "keep alive")
    properties, pos = _properties(body, pos, level, PacketType.CONNECT)
    client_id, pos = read_string(body, pos, "client identifier")
    will = username = password = None
    if has_will:
        will_properties, pos = _properties(body, pos, level, WILL_PROPERTIES)
        will_topic, pos = read_string(body, pos, "will topic")
        will_payload, pos = read_binary(body, pos, "will payload")
        will = Will(will_topic, will_payload, will_qos, will_retain, will_properties)
    if has_username:
        username, pos = read_string(body, pos, "user name")
    if has_password:
        password, pos = read_binary(body, pos, "password")
    _expect_end(body, pos, PacketType.CONNECT)
    return Connect(
        client_id,
        level,
        bool(flags & 0x02),
        keep_alive,
        username,
        password,
        will,
        properties,
    )


def _connack(first: int, body: bytes, level: int) -> ConnAck:
    """CONNACK [MQTT 3.2]; bits 7-1 of the acknowledge flags are reserved [MQTT-3.2.2-1]."""
    flags, pos = read_u8(body, 0, "connect acknowledge flags")
    if flags & 0xFE:
        raise MalformedPacket("CONNACK reserved flags are set [MQTT-3.2.2-1]")
    reason_code, pos = read_u8(body, pos, "connect reason code")
    properties, pos = _properties(body, pos, level, PacketType.CONNACK)
    _expect_end(body, pos, PacketType.CONNACK)
    return ConnAck(bool(flags), reason_code, properties)


def _publish(first: int, body: bytes, level: int) -> Publish:
    """PUBLISH [MQTT 3.3]: inlined, since it is by far the most frequent packet."""
    qos = first >> 1 & 0x03
    dup = bool(first & 0x08)
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3 [MQTT-3.3.1-4]")
    if dup and not qos:
        raise MalformedPacket("PUBLISH with QoS 0 and DUP set [MQTT-3.3.1-2]")
    size = len(body)
    if size < 2:
        raise MalformedPacket("packet truncated inside topic name")
    pos = 2 + (body[0] << 8 | body[1])
    if pos > size:
        raise MalformedPacket("topic name overruns the packet")
    topic = decode_utf8(body[2:pos], "topic name")
    packet_id = 0
    if qos:
        packet_id, pos = _packet_id(body, pos)
    properties = NO_PROPERTIES
    if level >= MQTT_5:
        if pos < size and body[pos] == 0:
            pos += 1
        else:
            properties, pos = read_properties(body, pos, PacketType.PUBLISH)
    return Publish(topic, body[pos:], qos, bool(first & 0x01), dup, packet_id, properties)


_ACK_CLASSES: dict[int, type[PubAck | PubRec | PubRel | PubComp]] = {
    PacketType.PUBACK: PubAck,
    PacketType.PUBREC: PubRec,
    PacketType.PUBREL: PubRel,
    PacketType.PUBCOMP: PubComp,
}


def _ack(first: int, body: bytes, level: int) -> PubAck | PubRec | PubRel | PubComp:
    """PUBACK, PUBREC, PUBREL, PUBCOMP; MQTT 5 may omit reason and properties [MQTT 3.4.2.1]."""
    cls = _ACK_CLASSES[first >> 4]
    packet_id, pos = _packet_id(body, 0)
    reason_code = 0
    properties = NO_PROPERTIES
    if level >= MQTT_5 and pos < len(body):
        reason_code, pos = read_u8(body, pos, "reason code")
        if pos < len(body):
            properties, pos = read_properties(body, pos, cls.packet_type)
    _expect_end(body, pos, cls.packet_type)
    return cls(packet_id, reason_code, properties)


def _subscription(body: bytes, pos: int, level: int) -> tuple[Subscription, int]:
    """One topic filter and its Subscription Options byte [MQTT 3.8.3.1]."""
    topic_filter, pos = read_string(body, pos, "topic filter")
    options, pos = read_u8(body, pos, "subscription options")
    qos = options & 0x03
    if qos == 3:
        raise MalformedPacket("subscription with QoS 3 [MQTT-3.8.3-4]")
    if level < MQTT_5:
        if options & 0xFC:
            raise MalformedPacket("reserved subscription option bits are set [MQTT-3.8.3-4]")
        return Subscription(topic_filter, qos), pos
    if options & 0xC0:
        raise MalformedPacket("reserved subscription option bits are set [MQTT-3.8.3-5]")
    retain_handling = options >> 4 & 0x03
    if retain_handling == 3:
        raise ProtocolError("retain handling 3 [MQTT 3.8.3.1]")
    return (
        Subscription(
            topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
        ),
        pos,
    )


def _subscribe(first: int, body: bytes, level: int) -> Subscribe:
    packet_id, pos = _packet_id(body, 0)
    properties, pos = _properties(body, pos, level, PacketType.SUBSCRIBE)
    subscriptions = []
    while pos < len(body):
        subscription, pos = _subscription(body, pos, level)
        subscriptions.append(subscription)
    if not subscriptions:
        raise ProtocolError("SUBSCRIBE without subscriptions [MQTT-3.8.3-3]")
    return Subscribe(packet_id, tuple(subscriptions), properties)


def _suback(first: int, body: bytes, level: int) -> SubAck:
    """SUBACK [MQTT 3.9]; MQTT 3.1.1 allows return codes 0, 1, 2 and 0x80 [MQTT-3.9.3-2]."""
    packet_id, pos = _packet_id(body, 0)
    properties, pos = _properties(body, pos, level, PacketType.SUBACK)
    codes = tuple(body[pos:])
    if level < MQTT_5 and not _V3_SUBACK_CODES.issuperset(codes):
        raise MalformedPacket(f"invalid SUBACK return codes {codes} [MQTT-3.9.3-2]")
    return SubAck(packet_id, codes, properties)


def _unsubscribe(first: int, body: bytes, level: int) -> Unsubscribe:
    packet_id, pos = _packet_id(body, 0)
    properties, pos = _properties(body, pos, level, PacketType.UNSUBSCRIBE)
    topic_filters = []
    while pos < len(body):
        topic_filter, pos = read_string(body, pos, "topic filter")
        topic_filters.append(topic_filter)
    if not topic_filters:
        raise ProtocolError("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, tuple(topic_filters), properties)


def _unsuback(first: int, body: bytes, level: int) -> UnsubAck:
    """UNSUBACK [MQTT 3.11]; MQTT 3.1.1 has only the packet identifier."""
    packet_id, pos = _packet_id(body, 0)
    if level < MQTT_5:
        _expect_end(body, pos, PacketType.UNSUBACK)
        return UnsubAck(packet_id)
    properties, pos = read_properties(body, pos, PacketType.UNSUBACK)
    return UnsubAck(packet_id, tuple(body[pos:]), properties)


def _ping(first: int, body: bytes, level: int) -> PingReq | PingResp:
    packet_type = PacketType(first >> 4)
    _expect_end(body, 0, packet_type)
    return PingReq() if packet_type is PacketType.PINGREQ else PingResp()


def _disconnect_or_auth(first: int, body: bytes, level: int) -> Disconnect | Auth:
    """DISCONNECT and AUTH; MQTT 5 may omit reason code and properties [MQTT 3.14.2.1]."""
    cls = Disconnect if first >> 4 == PacketType.DISCONNECT else Auth
    reason_code = 0
    properties = NO_PROPERTIES
    pos = 0
    if level >= MQTT_5 and body:
        reason_code, pos = read_u8(body, pos, "reason code")
        if pos < len(body):
            properties, pos = read_properties(body, pos, cls.packet_type)
    _expect_end(body, pos, cls.packet_type)
    return cls(reason_code, properties)


_DECODERS: dict[int, Callable[[int, bytes, int], Packet]] = {
    PacketType.CONNECT: _connect,
    PacketType.CONNACK: _connack,
    PacketType.PUBLISH: _publish,
    PacketType.PUBACK: _ack,
    PacketType.PUBREC: _ack,
    PacketType.PUBREL: _ack,
    PacketType.PUBCOMP: _ack,
    PacketType.SUBSCRIBE: _subscribe,
    PacketType.SUBACK: _suback,
    PacketType.UNSUBSCRIBE: _unsubscribe,
    PacketType.UNSUBACK: _unsuback,
    PacketType.PINGREQ: _ping,
    PacketType.PINGRESP: _ping,
    PacketType.DISCONNECT: _disconnect_or_auth,
    PacketType.AUTH: _disconnect_or_auth,
}


def decode_packet(first_byte: int, body: bytes | memoryview, protocol_level: int) -> Packet:
    """Decode one packet from its fixed-header first byte and its body.

    ``protocol_level`` is the connection's level (4 before CONNECT, which decodes its own).
    """
    if type(body) is not bytes:
        body = bytes(body)
    packet_type = first_byte >> 4
    if packet_type == PacketType.PUBLISH:
        return _publish(first_byte, body, protocol_level)
    if packet_type == 0 or (packet_type == PacketType.AUTH and protocol_level < MQTT_5):
        raise MalformedPacket(f"invalid packet type {packet_type}")
    if first_byte & 0x0F != FIXED_FLAGS.get(packet_type, 0):
        raise MalformedPacket(
            f"invalid fixed header flags {first_byte & 0x0F:#06b} for "
            f"{PacketType(packet_type).name} [MQTT-2.1.3-1]"
        )
    return _DECODERS[packet_type](first_byte, body, protocol_level)
