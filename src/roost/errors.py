"""Roost's exceptions and the MQTT reason codes they carry.

Every protocol failure is a :class:`ProtocolError` holding the MQTT 5 reason code
that one place in the broker turns into a CONNACK or DISCONNECT. The whole tree::

    RoostError
    ├── ConfigError                 a setting is invalid (start-up stops, naming it)
    ├── StoreError                  the store cannot be opened, read or written
    ├── EncodeError (ValueError)    a value does not fit its MQTT wire type
    ├── PacketIdsExhausted          all 65535 packet identifiers of a session are in use
    ├── TransactionRefused          a half message or decision is refused (PUBACK code)
    └── ProtocolError               a peer broke the protocol (CONNACK / DISCONNECT code)
        ├── MalformedPacket
        ├── PacketTooLarge
        ├── UnsupportedProtocolVersion
        └── ConnectRefused          CONNECT well formed but refused (CONNACK, not DISCONNECT)

The client library adds ``roost.client.errors.ClientError`` under ``RoostError``.
"""

from __future__ import annotations

from enum import IntEnum


class ReasonCode(IntEnum):
    """MQTT 5.0 reason codes (section 2.4). 0x00 means Success / Normal / Granted QoS 0."""

    SUCCESS = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    REAUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2


class ConnackV3(IntEnum):
    """MQTT 3.1.1 CONNACK return codes (section 3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USER_NAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class RoostError(Exception):
    """Root of every exception Roost raises on purpose."""


class ConfigError(RoostError):
    """A configuration value is invalid; the message names the setting."""


class StoreError(RoostError):
    """The session/message store cannot be used (corrupt, unreadable, wrong version)."""


class EncodeError(RoostError, ValueError):
    """A value cannot be encoded: out of its wire type's range or not allowed there."""


class PacketIdsExhausted(RoostError):
    """All 65535 packet identifiers of a session are in use [MQTT-2.2.1]."""


class TransactionRefused(RoostError):
    """A half message or decision is not accepted; ``reason_code`` goes in the PUBACK."""

    def __init__(self, message: str, reason_code: ReasonCode) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class ProtocolError(RoostError):
    """A peer broke the MQTT protocol; ``reason_code`` says how (sent in DISCONNECT/CONNACK)."""

    reason_code: ReasonCode = ReasonCode.PROTOCOL_ERROR

    def __init__(self, message: str, reason_code: ReasonCode | None = None) -> None:
        super().__init__(message)
        if reason_code is not None:
            self.reason_code = reason_code


class MalformedPacket(ProtocolError):
    """The bytes do not form a valid MQTT packet [MQTT-4.13]."""

    reason_code = ReasonCode.MALFORMED_PACKET


class PacketTooLarge(ProtocolError):
    """A packet exceeds the maximum packet size in force."""

    reason_code = ReasonCode.PACKET_TOO_LARGE


class UnsupportedProtocolVersion(ProtocolError):
    """CONNECT names a protocol or level the broker does not speak [MQTT-3.1.2-2].

    ``protocol_level`` is the level byte received, so a 3.x client can be answered with
    CONNACK return code 1.
    """

    reason_code = ReasonCode.UNSUPPORTED_PROTOCOL_VERSION

    def __init__(self, message: str, protocol_level: int) -> None:
        super().__init__(message)
        self.protocol_level = protocol_level


class ConnectRefused(ProtocolError):
    """CONNECT is well formed but refused: answered with CONNACK, not DISCONNECT."""
