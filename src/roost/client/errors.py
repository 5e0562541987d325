"""Exceptions of the MQTT client, carrying the reason code the server sent."""

from __future__ import annotations

from roost.codec.packets import MQTT_5, PubAck, PubComp, PubRec
from roost.errors import ConnackV3, ReasonCode, RoostError


def reason_name(reason_code: int, connack_v3: bool = False) -> str:
    """``NAME (0xNN)`` for an MQTT 5 reason code or, with ``connack_v3``, a 3.1.1 return code."""
    names: type[ReasonCode] | type[ConnackV3] = ConnackV3 if connack_v3 else ReasonCode
    try:
        name = names(reason_code).name
    except ValueError:
        name = "UNKNOWN"
    return f"{name} (0x{reason_code:02X})"


class ClientError(RoostError):
    """Root of the client's exceptions."""


class ConnectionLost(ClientError):
    """The connection ended before the operation completed."""


class ConnectError(ClientError):
    """The server refused the connection: ``reason_code`` is the CONNACK's."""

    def __init__(self, reason_code: int, protocol_level: int) -> None:
        self.reason_code = reason_code
        name = reason_name(reason_code, connack_v3=protocol_level < MQTT_5)
        super().__init__(f"connection refused: {name}")


class PublishError(ClientError):
    """The server rejected a publish: ``ack`` carries a reason code of 0x80 or more."""

    def __init__(self, ack: PubAck | PubRec | PubComp) -> None:
        self.ack = ack
        self.reason_code = ack.reason_code
        name = reason_name(ack.reason_code)
        super().__init__(f"publish rejected by {type(ack).__name__.upper()}: {name}")
