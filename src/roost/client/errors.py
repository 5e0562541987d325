"""Exceptions of the MQTT client, carrying the reason code the server sent."""

from __future__ import annotations

from roost.codec.packets import MQTT_5, PubAck, PubComp, PubRec
from roost.codec.properties import NO_PROPERTIES, Properties
from roost.errors import ConnackV3, ReasonCode, RoostError


def reason_name(reason_code: int, connack_v3: bool = False) -> str:
    """``name in words (0xNN)`` for an MQTT 5 reason code or, with ``connack_v3``, a 3.1.1
    return code, as mosquitto_pub words them (``bad user name or password (0x86)``)."""
    names: type[ReasonCode] | type[ConnackV3] = ConnackV3 if connack_v3 else ReasonCode
    try:
        name = names(reason_code).name.lower().replace("_", " ")
    except ValueError:
        name = "unknown"
    return f"{name} (0x{reason_code:02X})"


class ClientError(RoostError):
    """Root of the client's exceptions."""


class ConnectionLost(ClientError):
    """The connection ended before the operation completed."""


class ConnectError(ClientError):
    """The server refused the connection: ``reason_code`` is the CONNACK's;
    ``server_reference`` the server it names instead (MQTT 5 0x9C and 0x9D only)."""

    def __init__(
        self, reason_code: int, protocol_level: int, properties: Properties = NO_PROPERTIES
    ) -> None:
        self.reason_code = reason_code
        self.server_reference: str | None = None
        if reason_code in (ReasonCode.USE_ANOTHER_SERVER, ReasonCode.SERVER_MOVED):
            self.server_reference = properties.server_reference
        name = reason_name(reason_code, connack_v3=protocol_level < MQTT_5)
        text = f"connection refused: {name}"
        if self.server_reference is not None:
            text += f", use {self.server_reference}"
        super().__init__(text)


class RedirectError(ClientError):
    """Servers sent the client on in a loop, or more often than it follows: ``servers``
    are the ones it tried, then the one it was sent to last."""

    def __init__(
        self, visited: list[tuple[str, int]], next_server: tuple[str, int], max_redirects: int
    ) -> None:
        self.servers = [*visited, next_server]
        path = " -> ".join(f"{host}:{port}" for host, port in self.servers)
        why = "redirect loop" if next_server in visited else f"more than {max_redirects} redirects"
        super().__init__(f"connection refused: {why}: {path}")


class PublishError(ClientError):
    """The server rejected a publish: ``ack`` carries a reason code of 0x80 or more."""

    def __init__(self, ack: PubAck | PubRec | PubComp) -> None:
        self.ack = ack
        self.reason_code = ack.reason_code
        name = reason_name(ack.reason_code)
        super().__init__(f"publish rejected by {type(ack).__name__.upper()}: {name}")
