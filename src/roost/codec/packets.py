"""MQTT 3.1, 3.1.1 and 5.0 control packets as slotted dataclasses.

One class per packet type; fields hold decoded values. Packets are values: nothing
mutates one after it is made. They are not ``frozen`` because a frozen dataclass costs
about 1 µs more per instance (it sets each field through ``object.__setattr__``), which is
a tenth of the broker's budget per message; ``Properties`` and the small parts stay frozen.
Fields that only exist in MQTT 5 (reason codes, properties) take their neutral default
for 3.1.1, and encoding for 3.1.1 ignores them. ``protocol_level`` 3 is MQTT 3.1, 4 is
3.1.1, 5 is 5.0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

from roost.codec.properties import NO_PROPERTIES, Properties

MQTT_3_1 = 3
MQTT_3_1_1 = 4
MQTT_5 = 5
PROTOCOL_VERSIONS = {MQTT_3_1: "3.1", MQTT_3_1_1: "3.1.1", MQTT_5: "5.0"}  # level -> name


class PacketType(IntEnum):
    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    properties: Properties = NO_PROPERTIES


@dataclass(slots=True)
class Connect:
    client_id: str
    protocol_level: int = MQTT_3_1_1
    clean_start: bool = True
    keep_alive: int = 60
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.CONNECT


@dataclass(slots=True)
class ConnAck:
    session_present: bool = False
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.CONNACK


@dataclass(slots=True)
class Publish:
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    packet_id: int = 0
    properties: Properties = NO_PROPERTIES
    # The packet's own bytes, kept by the framer for QoS 0 so a broker can forward them
    # unchanged instead of encoding the message again; not part of the value.
    frame: bytes = field(default=b"", compare=False, repr=False)
    packet_type = PacketType.PUBLISH


@dataclass(slots=True)
class PubAck:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.PUBACK


@dataclass(slots=True)
class PubRec:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.PUBREC


@dataclass(slots=True)
class PubRel:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.PUBREL


@dataclass(slots=True)
class PubComp:
    packet_id: int
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.PUBCOMP


@dataclass(frozen=True, slots=True)
class Subscription:
    """One entry of a SUBSCRIBE payload: a filter and its subscription options."""

    topic_filter: str
    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.SUBSCRIBE


@dataclass(slots=True)
class SubAck:
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.SUBACK


@dataclass(slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.UNSUBSCRIBE


@dataclass(slots=True)
class UnsubAck:
    """UNSUBACK; ``reason_codes`` is empty for MQTT 3.1.1, which has none."""

    packet_id: int
    reason_codes: tuple[int, ...] = field(default=())
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.UNSUBACK


@dataclass(slots=True)
class PingReq:
    packet_type = PacketType.PINGREQ


@dataclass(slots=True)
class PingResp:
    packet_type = PacketType.PINGRESP


@dataclass(slots=True)
class Disconnect:
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.DISCONNECT


@dataclass(slots=True)
class Auth:
    reason_code: int = 0
    properties: Properties = NO_PROPERTIES
    packet_type = PacketType.AUTH


Packet = (
    Connect
    | ConnAck
    | Publish
    | PubAck
    | PubRec
    | PubRel
    | PubComp
    | Subscribe
    | SubAck
    | Unsubscribe
    | UnsubAck
    | PingReq
    | PingResp
    | Disconnect
    | Auth
)
