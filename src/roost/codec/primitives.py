"""Wire-level building blocks shared by the encoder and the decoder.

Integers, Variable Byte Integers, strings and binary data [MQTT-1.5], and the MQTT 5
property section [MQTT 2.2.2] driven by one table transcribed from spec table 2.2.2.2.
Encoders raise ``EncodeError`` (a ``ValueError``) for values that do not fit; readers raise
:class:`MalformedPacket` for bytes that do not parse.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from roost.codec.packets import PacketType
from roost.codec.properties import NO_PROPERTIES, Properties
from roost.errors import EncodeError, MalformedPacket, ProtocolError

U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
VARINT_MAX = 268_435_455
_VARINT_1 = tuple(bytes((i,)) for i in range(128))

# Fixed-header flags that are not 0b0000 [MQTT-2.1.3-1]; PUBLISH carries its own.
FIXED_FLAGS: dict[int, int] = {
    PacketType.PUBREL: 0b0010,
    PacketType.SUBSCRIBE: 0b0010,
    PacketType.UNSUBSCRIBE: 0b0010,
}

# --- encoding ---------------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """Variable Byte Integer [MQTT-1.5.5]; EncodeError outside 0..268435455."""
    if 0 <= value < 0x80:
        return _VARINT_1[value]
    if not 0 <= value <= VARINT_MAX:
        raise EncodeError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_u8(value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise EncodeError(f"byte out of range: {value}")
    return _VARINT_1[value] if value < 0x80 else bytes((value,))


def encode_u16(value: int) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise EncodeError(f"two byte integer out of range: {value}")
    return U16.pack(value)


def encode_u32(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise EncodeError(f"four byte integer out of range: {value}")
    return U32.pack(value)


def utf8(text: str) -> bytes:
    """UTF-8 bytes of an MQTT string: no surrogates, no U+0000 [MQTT-1.5.4-1,-2]."""
    data = text.encode()
    if b"\x00" in data:
        raise EncodeError("MQTT strings must not contain U+0000 [MQTT-1.5.4-2]")
    return data


def encode_binary(data: bytes) -> bytes:
    """Two-byte length prefix then the bytes [MQTT-1.5.6]."""
    if len(data) > 0xFFFF:
        raise EncodeError(f"string or binary data longer than 65535 bytes: {len(data)}")
    return U16.pack(len(data)) + data


def encode_string(text: str) -> bytes:
    return encode_binary(utf8(text))


def encode_string_pair(pair: tuple[str, str]) -> bytes:
    return encode_string(pair[0]) + encode_string(pair[1])


# --- decoding ---------------------------------------------------------------------------


def _truncated(what: str) -> MalformedPacket:
    return MalformedPacket(f"packet truncated inside {what}")


def read_u8(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    if pos >= len(buf):
        raise _truncated(what)
    return buf[pos], pos + 1


def read_u16(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    if pos + 2 > len(buf):
        raise _truncated(what)
    return buf[pos] << 8 | buf[pos + 1], pos + 2


def read_u32(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    if pos + 4 > len(buf):
        raise _truncated(what)
    return U32.unpack_from(buf, pos)[0], pos + 4


def read_varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    """Variable Byte Integer of at most 4 bytes [MQTT-1.5.5]."""
    value = 0
    for shift in (0, 7, 14, 21):
        if pos >= len(buf):
            raise _truncated(what)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    raise MalformedPacket(f"{what}: variable byte integer longer than 4 bytes [MQTT-1.5.5]")


def read_binary(buf: bytes, pos: int, what: str) -> tuple[bytes, int]:
    length, pos = read_u16(buf, pos, what)
    end = pos + length
    if end > len(buf):
        raise MalformedPacket(f"{what}: length {length} overruns the packet")
    return buf[pos:end], end


def decode_utf8(raw: bytes, what: str) -> str:
    """Decode an MQTT string, rejecting ill-formed UTF-8 and U+0000 [MQTT-1.5.4-1,-2]."""
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise MalformedPacket(f"{what} is not well-formed UTF-8 [MQTT-1.5.4-1]") from None
    if "\x00" in text:
        raise MalformedPacket(f"{what} contains U+0000 [MQTT-1.5.4-2]")
    return text


def read_string(buf: bytes, pos: int, what: str) -> tuple[str, int]:
    raw, pos = read_binary(buf, pos, what)
    return decode_utf8(raw, what), pos


def read_string_pair(buf: bytes, pos: int, what: str) -> tuple[tuple[str, str], int]:
    key, pos = read_string(buf, pos, what)
    value, pos = read_string(buf, pos, what)
    return (key, value), pos


# --- properties -------------------------------------------------------------------------

WILL_PROPERTIES = 0
"""Pseudo packet type for the Will Properties in a CONNECT payload [MQTT 3.1.3.2]."""


@dataclass(frozen=True, slots=True)
class WireType:
    """How one kind of property value is written and read."""

    encode: Callable[[Any], bytes]
    read: Callable[[bytes, int, str], tuple[Any, int]]
    maximum: int | None = None  # largest value of an integer type


BYTE = WireType(encode_u8, read_u8, 0xFF)
TWO_BYTE = WireType(encode_u16, read_u16, 0xFFFF)
FOUR_BYTE = WireType(encode_u32, read_u32, 0xFFFFFFFF)
VARINT = WireType(encode_varint, read_varint, VARINT_MAX)
STRING = WireType(encode_string, read_string)
BINARY = WireType(encode_binary, read_binary)
STRING_PAIR = WireType(encode_string_pair, read_string_pair)


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """One row of spec table 2.2.2.2 plus the value range the spec allows."""

    ident: int
    name: str  # field of Properties
    wire: WireType
    allowed: frozenset[int]  # packet types (and WILL_PROPERTIES) it may appear in
    repeatable: frozenset[int] = frozenset()  # where it may appear more than once
    low: int = 0
    high: int | None = None  # defaults to the wire type's maximum; None for non-integers
    prefix: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prefix", encode_varint(self.ident))
        if self.high is None:
            object.__setattr__(self, "high", self.wire.maximum)

    def out_of_range(self, value: Any) -> bool:
        return self.high is not None and not self.low <= value <= self.high


_P = PacketType
_MESSAGE = frozenset({_P.PUBLISH, WILL_PROPERTIES})
_ACKS = {_P.PUBACK, _P.PUBREC, _P.PUBREL, _P.PUBCOMP}
_USER_PROPERTY_PACKETS = frozenset({*_P, WILL_PROPERTIES} - {_P.PINGREQ, _P.PINGRESP})


def _in(*kinds: int) -> frozenset[int]:
    return frozenset(kinds)


PROPERTY_SPECS = (
    PropertySpec(0x01, "payload_format_indicator", BYTE, _MESSAGE, high=1),
    PropertySpec(0x02, "message_expiry_interval", FOUR_BYTE, _MESSAGE),
    PropertySpec(0x03, "content_type", STRING, _MESSAGE),
    PropertySpec(0x08, "response_topic", STRING, _MESSAGE),
    PropertySpec(0x09, "correlation_data", BINARY, _MESSAGE),
    # Subscription Identifier 0 is a Protocol Error [MQTT 3.8.2.1.2].
    PropertySpec(
        0x0B,
        "subscription_identifiers",
        VARINT,
        _in(_P.PUBLISH, _P.SUBSCRIBE),
        repeatable=_in(_P.PUBLISH),
        low=1,
    ),
    PropertySpec(
        0x11, "session_expiry_interval", FOUR_BYTE, _in(_P.CONNECT, _P.CONNACK, _P.DISCONNECT)
    ),
    PropertySpec(0x12, "assigned_client_identifier", STRING, _in(_P.CONNACK)),
    PropertySpec(0x13, "server_keep_alive", TWO_BYTE, _in(_P.CONNACK)),
    PropertySpec(0x15, "authentication_method", STRING, _in(_P.CONNECT, _P.CONNACK, _P.AUTH)),
    PropertySpec(0x16, "authentication_data", BINARY, _in(_P.CONNECT, _P.CONNACK, _P.AUTH)),
    PropertySpec(0x17, "request_problem_information", BYTE, _in(_P.CONNECT), high=1),
    PropertySpec(0x18, "will_delay_interval", FOUR_BYTE, _in(WILL_PROPERTIES)),
    PropertySpec(0x19, "request_response_information", BYTE, _in(_P.CONNECT), high=1),
    PropertySpec(0x1A, "response_information", STRING, _in(_P.CONNACK)),
    PropertySpec(0x1C, "server_reference", STRING, _in(_P.CONNACK, _P.DISCONNECT)),
    PropertySpec(
        0x1F,
        "reason_string",
        STRING,
        _in(_P.CONNACK, *_ACKS, _P.SUBACK, _P.UNSUBACK, _P.DISCONNECT, _P.AUTH),
    ),
    # Receive Maximum 0 and Maximum Packet Size 0 are Protocol Errors [MQTT 3.1.2.11.3, 3.1.2.11.4].
    PropertySpec(0x21, "receive_maximum", TWO_BYTE, _in(_P.CONNECT, _P.CONNACK), low=1),
    PropertySpec(0x22, "topic_alias_maximum", TWO_BYTE, _in(_P.CONNECT, _P.CONNACK)),
    PropertySpec(0x23, "topic_alias", TWO_BYTE, _in(_P.PUBLISH)),
    PropertySpec(0x24, "maximum_qos", BYTE, _in(_P.CONNACK), high=1),
    PropertySpec(0x25, "retain_available", BYTE, _in(_P.CONNACK), high=1),
    PropertySpec(
        0x26,
        "user_properties",
        STRING_PAIR,
        _USER_PROPERTY_PACKETS,
        repeatable=_USER_PROPERTY_PACKETS,
    ),
    PropertySpec(0x27, "maximum_packet_size", FOUR_BYTE, _in(_P.CONNECT, _P.CONNACK), low=1),
    PropertySpec(0x28, "wildcard_subscription_available", BYTE, _in(_P.CONNACK), high=1),
    PropertySpec(0x29, "subscription_identifier_available", BYTE, _in(_P.CONNACK), high=1),
    PropertySpec(0x2A, "shared_subscription_available", BYTE, _in(_P.CONNACK), high=1),
)
PROPERTIES_BY_ID = {spec.ident: spec for spec in PROPERTY_SPECS}
_LIST_FIELDS = frozenset({"subscription_identifiers", "user_properties"})


def kind_name(kind: int) -> str:
    return "Will properties" if kind == WILL_PROPERTIES else PacketType(kind).name


def encode_properties(props: Properties, kind: int | None = None) -> bytes:
    """The property bytes without their length prefix [MQTT 2.2.2].

    With ``kind`` (a packet type or WILL_PROPERTIES), a property the spec does not allow
    there raises EncodeError; so does any value outside its range.
    """
    if props is NO_PROPERTIES:
        return b""
    out: list[bytes] = []
    for spec in PROPERTY_SPECS:
        value = getattr(props, spec.name)
        if value is None or value == ():
            continue
        if kind is not None and kind not in spec.allowed:
            raise EncodeError(f"{spec.name} is not allowed in {kind_name(kind)}")
        if spec.name not in _LIST_FIELDS:
            value = (value,)
        elif kind is not None and len(value) > 1 and kind not in spec.repeatable:
            raise EncodeError(f"{spec.name} may appear only once in {kind_name(kind)}")
        for item in value:
            if spec.out_of_range(item):
                raise EncodeError(f"{spec.name} out of range: {item}")
            out.append(spec.prefix)
            out.append(spec.wire.encode(item))
    return b"".join(out)


def encode_property_section(props: Properties, kind: int) -> bytes:
    """Property Length then the properties [MQTT 2.2.2.1]."""
    body = encode_properties(props, kind)
    return encode_varint(len(body)) + body


def read_properties(buf: bytes, pos: int, kind: int) -> tuple[Properties, int]:
    """Read a property section (length included) allowed in packet type ``kind``."""
    length, pos = read_varint(buf, pos, "property length")
    if not length:
        return NO_PROPERTIES, pos
    end = pos + length
    if end > len(buf):
        raise MalformedPacket(f"property length {length} overruns the packet")
    values: dict[str, Any] = {}
    while pos < end:
        ident, pos = read_varint(buf, pos, "property identifier")
        spec = PROPERTIES_BY_ID.get(ident)
        if spec is None or kind not in spec.allowed:
            raise MalformedPacket(f"property 0x{ident:02X} is not allowed in {kind_name(kind)}")
        value, pos = spec.wire.read(buf, pos, spec.name)
        if spec.out_of_range(value):
            raise ProtocolError(f"{spec.name} has invalid value {value}")
        if spec.name in values and kind not in spec.repeatable:
            raise ProtocolError(f"{spec.name} appears twice in {kind_name(kind)} [MQTT 2.2.2.2]")
        if spec.name in _LIST_FIELDS:
            values.setdefault(spec.name, []).append(value)
        else:
            values[spec.name] = value
    if pos != end:
        raise MalformedPacket("last property overruns the property length")
    for name in _LIST_FIELDS & values.keys():
        values[name] = tuple(values[name])
    return Properties(**values), end
