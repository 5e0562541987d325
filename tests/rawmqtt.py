"""A blocking raw-socket MQTT 3.1 / 3.1.1 / 5.0 client for tests, with its own encoder and
decoder: it imports nothing from ``roost.codec``, so what it reads is an independent check of
the broker's encoder. Also helpers that build packet bytes by hand, for input no
well-behaved encoder would produce.

``raw`` (tests/clientfixtures.py) opens these clients and closes them at teardown.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

TIMEOUT = 10.0

LEVELS = pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])

# --------------------------------------------------------------------------------------------
# bytes by hand


def varint(value: int) -> bytes:
    """MQTT Variable Byte Integer (section 1.5.5)."""
    out = bytearray()
    while True:
        value, digit = divmod(value, 128)
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def utf8(text: str | bytes) -> bytes:
    """Two-byte length prefix followed by the (possibly invalid) bytes."""
    data = text.encode() if isinstance(text, str) else text
    return len(data).to_bytes(2, "big") + data


def frame(first_byte: int, body: bytes) -> bytes:
    """Fixed header (type and flags byte, remaining length) followed by ``body``."""
    return bytes([first_byte]) + varint(len(body)) + body


def connect_bytes(
    client_id: str = "raw",
    level: int = 4,
    flags: int = 0x02,
    keep_alive: int = 60,
    name: bytes = b"MQTT",
    properties: bytes = b"",
) -> bytes:
    """A CONNECT with the given raw flags byte; MQTT 5 shape (property length) if level >= 5."""
    body = utf8(name) + bytes([level, flags]) + keep_alive.to_bytes(2, "big")
    if level >= 5:
        body += varint(len(properties)) + properties
    return frame(0x10, body + utf8(client_id))


def publish_bytes(
    topic: bytes,
    payload: bytes = b"x",
    level: int = 5,
    qos: int = 0,
    packet_id: int = 1,
    properties: bytes = b"",
) -> bytes:
    """A PUBLISH with a raw topic and raw properties; ``qos`` goes straight into the flags."""
    body = utf8(topic)
    if qos:
        body += packet_id.to_bytes(2, "big")
    if level >= 5:
        body += varint(len(properties)) + properties
    return frame(0x30 | (qos << 1), body + payload)


# --------------------------------------------------------------------------------------------
# MQTT 5 properties

# By paho name: (identifier, wire type).
PROPS: dict[str, tuple[int, str]] = {
    "PayloadFormatIndicator": (0x01, "byte"),
    "MessageExpiryInterval": (0x02, "u32"),
    "ContentType": (0x03, "str"),
    "ResponseTopic": (0x08, "str"),
    "CorrelationData": (0x09, "bin"),
    "SubscriptionIdentifier": (0x0B, "varint"),
    "SessionExpiryInterval": (0x11, "u32"),
    "AssignedClientIdentifier": (0x12, "str"),
    "ServerKeepAlive": (0x13, "u16"),
    "AuthenticationMethod": (0x15, "str"),
    "AuthenticationData": (0x16, "bin"),
    "RequestProblemInformation": (0x17, "byte"),
    "WillDelayInterval": (0x18, "u32"),
    "RequestResponseInformation": (0x19, "byte"),
    "ResponseInformation": (0x1A, "str"),
    "ServerReference": (0x1C, "str"),
    "ReasonString": (0x1F, "str"),
    "ReceiveMaximum": (0x21, "u16"),
    "TopicAliasMaximum": (0x22, "u16"),
    "TopicAlias": (0x23, "u16"),
    "MaximumQoS": (0x24, "byte"),
    "RetainAvailable": (0x25, "byte"),
    "UserProperty": (0x26, "pair"),
    "MaximumPacketSize": (0x27, "u32"),
    "WildcardSubscriptionAvailable": (0x28, "byte"),
    "SubscriptionIdentifierAvailable": (0x29, "byte"),
    "SharedSubscriptionAvailable": (0x2A, "byte"),
}
_BY_ID = {ident: (name, kind) for name, (ident, kind) in PROPS.items()}
_MULTI = {"SubscriptionIdentifier", "UserProperty"}

TYPES = {
    "CONNECT": 1,
    "CONNACK": 2,
    "PUBLISH": 3,
    "PUBACK": 4,
    "PUBREC": 5,
    "PUBREL": 6,
    "PUBCOMP": 7,
    "SUBSCRIBE": 8,
    "SUBACK": 9,
    "UNSUBSCRIBE": 10,
    "UNSUBACK": 11,
    "PINGREQ": 12,
    "PINGRESP": 13,
    "DISCONNECT": 14,
    "AUTH": 15,
}
NAMES = {number: name for name, number in TYPES.items()}

RawProps = list[tuple[str, Any]]


def encode_props(props: RawProps | None) -> bytes:
    """Encode ``[(paho property name, value), ...]`` with its length prefix."""
    body = bytearray()
    for name, value in props or []:
        ident, kind = PROPS[name]
        body += varint(ident)
        if kind == "byte":
            body += bytes([value])
        elif kind == "u16":
            body += struct.pack("!H", value)
        elif kind == "u32":
            body += struct.pack("!I", value)
        elif kind == "varint":
            body += varint(value)
        elif kind in ("str", "bin"):
            body += utf8(value)
        else:
            body += utf8(value[0]) + utf8(value[1])
    return varint(len(body)) + bytes(body)


# --------------------------------------------------------------------------------------------
# decoding what the broker sends


@dataclass
class Pkt:
    """A decoded packet from the broker; fields its type does not use keep their default.
    ``props`` maps paho property names to values (a list for repeatable properties)."""

    name: str
    flags: int
    body: bytes
    packet_id: int = 0
    reason_code: int = 0
    reason_codes: list[int] = field(default_factory=list)
    props: dict[str, Any] = field(default_factory=dict)
    session_present: bool = False
    topic: str = ""
    payload: bytes = b""

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3

    @property
    def dup(self) -> bool:
        return bool(self.flags & 8)

    @property
    def retain(self) -> bool:
        return bool(self.flags & 1)

    @property
    def wire_size(self) -> int:
        """Size of the whole packet on the wire."""
        return len(frame((TYPES[self.name] << 4) | self.flags, self.body))

    def __repr__(self) -> str:
        extra = ""
        if self.name == "PUBLISH":
            extra = f" {self.topic!r} {self.payload[:40]!r} qos={self.qos} dup={self.dup}"
        return (
            f"<{self.name} id={self.packet_id} rc={self.reason_code:#x}"
            f" codes={self.reason_codes}{extra} props={self.props}>"
        )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        if len(out) != n:
            raise AssertionError(f"truncated packet from broker: {self.data!r}")
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int(struct.unpack("!H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("!I", self.take(4))[0])

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            b = self.u8()
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        return self.binary().decode()

    def props(self) -> dict[str, Any]:
        end = self.varint() + self.pos
        out: dict[str, Any] = {}
        while self.pos < end:
            ident = self.varint()
            if ident not in _BY_ID:
                raise AssertionError(f"broker sent unknown property {ident:#x}")
            name, kind = _BY_ID[ident]
            value: Any
            if kind == "byte":
                value = self.u8()
            elif kind == "u16":
                value = self.u16()
            elif kind == "u32":
                value = self.u32()
            elif kind == "varint":
                value = self.varint()
            elif kind == "str":
                value = self.string()
            elif kind == "bin":
                value = self.binary()
            else:
                value = (self.string(), self.string())
            if name in _MULTI:
                out.setdefault(name, []).append(value)
            else:
                assert name not in out, f"property {name} sent twice"
                out[name] = value
        return out

    def rest(self) -> bytes:
        return self.take(self.left())


def decode(first_byte: int, body: bytes, version: int) -> Pkt:
    """One packet sent by the broker to a client of protocol level ``version``."""
    pkt = Pkt(NAMES.get(first_byte >> 4, f"type{first_byte >> 4}"), first_byte & 0x0F, body)
    r = _Reader(body)
    v5 = version == 5
    if pkt.name == "CONNACK":
        pkt.session_present = bool(r.u8() & 1)
        pkt.reason_code = r.u8()
        if v5 and r.left():
            pkt.props = r.props()
    elif pkt.name == "PUBLISH":
        pkt.topic = r.string()
        if pkt.qos:
            pkt.packet_id = r.u16()
        if v5:
            pkt.props = r.props()
        pkt.payload = r.rest()
    elif pkt.name in ("PUBACK", "PUBREC", "PUBREL", "PUBCOMP"):
        pkt.packet_id = r.u16()
        if v5 and r.left():
            pkt.reason_code = r.u8()
            if r.left():
                pkt.props = r.props()
    elif pkt.name in ("SUBACK", "UNSUBACK"):
        pkt.packet_id = r.u16()
        if v5:
            pkt.props = r.props()
        pkt.reason_codes = list(r.rest())
    elif pkt.name in ("DISCONNECT", "AUTH") and r.left():
        pkt.reason_code = r.u8()
        if r.left():
            pkt.props = r.props()
    return pkt


# --------------------------------------------------------------------------------------------
# the client


def recv_before(sock: socket.socket, deadline: float) -> bytes:
    """What the socket has, waiting until ``deadline`` (time.monotonic) at most: b"" on
    EOF or a reset, TimeoutError at the deadline."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    sock.settimeout(remaining)
    try:
        return sock.recv(65536)
    except TimeoutError:
        raise
    except OSError:
        return b""


@dataclass
class Will:
    """A will for :meth:`RawClient.connect`; ``props`` are its MQTT 5 will properties."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False
    props: RawProps | None = None


class RawClient:
    """A blocking MQTT client over a plain socket (TCP_NODELAY): one packet at a time, no
    automatic acknowledgements, reads bounded by timeouts. ``version`` is the protocol
    level: 3 = MQTT 3.1, 4 = MQTT 3.1.1, 5 = MQTT 5.0."""

    def __init__(
        self, host: str, port: int, version: int = 4, receive_buffer: int | None = None
    ) -> None:
        if receive_buffer is None:
            self.sock = socket.create_connection((host, port), TIMEOUT)
        else:
            # Set before connecting: the TCP window is then sized to it from the start. A
            # receive buffer shrunk after the handshake is smaller than the window already
            # offered, and the kernel drops what the peer sends into the difference.
            family, kind, proto, _, address = socket.getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )[0]
            self.sock = socket.socket(family, kind, proto)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.sock.settimeout(TIMEOUT)
            self.sock.connect(address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.version = version
        self.buf = bytearray()
        self.closed = False

    # -- sending --------------------------------------------------------------------------

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_connect(
        self,
        client_id: str,
        clean: bool = True,
        keep_alive: int = 60,
        props: RawProps | None = None,
        session_expiry: int | None = None,
        will: Will | None = None,
        username: str | None = None,
        password: bytes | None = None,
    ) -> None:
        props = list(props or [])
        if session_expiry is not None:
            props.append(("SessionExpiryInterval", session_expiry))
        flags = 0x02 if clean else 0x00
        payload = utf8(client_id)
        if will is not None:
            flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
            if self.version == 5:
                payload += encode_props(will.props)
            payload += utf8(will.topic) + utf8(will.payload)
        if username is not None:
            flags |= 0x80
            payload += utf8(username)
        if password is not None:
            flags |= 0x40
            payload += utf8(password)
        name = "MQIsdp" if self.version == 3 else "MQTT"
        body = utf8(name) + bytes([self.version, flags]) + struct.pack("!H", keep_alive)
        if self.version == 5:
            body += encode_props(props)
        self.send(frame(0x10, body + payload))

    def connect(
        self,
        client_id: str,
        clean: bool = True,
        keep_alive: int = 60,
        props: RawProps | None = None,
        session_expiry: int | None = None,
        will: Will | None = None,
        username: str | None = None,
        password: bytes | None = None,
    ) -> Pkt | None:
        """Send CONNECT and return the broker's first packet (None if it just closed)."""
        self.send_connect(
            client_id, clean, keep_alive, props, session_expiry, will, username, password
        )
        return self.recv_or_close()

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        packet_id: int = 0,
        retain: bool = False,
        dup: bool = False,
        props: RawProps | None = None,
    ) -> None:
        first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
        body = utf8(topic)
        if qos:
            body += struct.pack("!H", packet_id)
        if self.version == 5:
            body += encode_props(props)
        self.send(frame(first, body + payload))

    def ack(self, name: str, packet_id: int, reason_code: int = 0) -> None:
        """PUBACK / PUBREC / PUBREL / PUBCOMP (MQTT 5: with ``reason_code`` unless Success)."""
        first = (TYPES[name] << 4) | (0x02 if name == "PUBREL" else 0)
        body = struct.pack("!H", packet_id)
        if reason_code:
            body += bytes([reason_code])
        self.send(frame(first, body))

    def subscribe(
        self, packet_id: int, filters: list[tuple[str, int]], props: RawProps | None = None
    ) -> Pkt:
        """SUBSCRIBE ``[(filter, options byte)]`` and return the SUBACK."""
        body = struct.pack("!H", packet_id)
        if self.version == 5:
            body += encode_props(props)
        for topic_filter, options in filters:
            body += utf8(topic_filter) + bytes([options])
        self.send(frame(0x82, body))
        return self.expect("SUBACK")

    def until_pingresp(self) -> list[Pkt]:
        """Send PINGREQ and return what the broker sent before its PINGRESP: everything it
        had to send up to reading the PINGREQ (packets of one connection keep their order)."""
        self.send(b"\xc0\x00")
        got: list[Pkt] = []
        while (pkt := self.recv()).name != "PINGRESP":
            got.append(pkt)
        return got

    def ping(self) -> None:
        """PINGREQ answered by PINGRESP with nothing before it."""
        before = self.until_pingresp()
        assert before == [], f"unexpected packets before the PINGRESP: {before}"

    def auth(self, reason_code: int, props: RawProps) -> None:
        """AUTH (MQTT 5 enhanced authentication) with ``reason_code`` and ``props``."""
        self.send(frame(0xF0, bytes([reason_code]) + encode_props(props)))

    def disconnect(self, reason_code: int = 0, props: RawProps | None = None) -> None:
        """DISCONNECT (MQTT 5: with ``reason_code`` and ``props``); the caller then drops
        the socket or waits for the broker to close it."""
        body = b""
        if self.version == 5 and (reason_code or props):
            body = bytes([reason_code]) + encode_props(props)
        self.send(frame(0xE0, body))

    def drop(self) -> None:
        """Close the socket (without DISCONNECT unless one was sent)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.close()

    def abort(self) -> None:
        """Close with a TCP RST instead of a FIN (SO_LINGER 0), like a network failure."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.drop()

    # -- receiving ------------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False on EOF / reset; TimeoutError at the deadline."""
        chunk = recv_before(self.sock, deadline)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def parse_buffered(self) -> Pkt | None:
        """The next packet if it has arrived already (None if not: nothing waits for it)."""
        return self._try_parse()

    def _try_parse(self) -> Pkt | None:
        length, shift, i = 0, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            length |= (b & 0x7F) << shift
            shift += 7
            i += 1
            if not b & 0x80:
                break
        if len(self.buf) < i + length:
            return None
        first = self.buf[0]
        body = bytes(self.buf[i : i + length])
        del self.buf[: i + length]
        return decode(first, body, self.version)

    def recv_or_close(self, timeout: float = TIMEOUT) -> Pkt | None:
        """The next packet, or None if the broker closed the connection first."""
        deadline = time.monotonic() + timeout
        while True:
            pkt = self._try_parse()
            if pkt is not None:
                return pkt
            if self.closed:
                return None
            try:
                if not self._fill(deadline):
                    self.closed = True
                    return None
            except TimeoutError:
                raise AssertionError(f"nothing from the broker within {timeout}s") from None

    def recv(self, timeout: float = TIMEOUT) -> Pkt:
        pkt = self.recv_or_close(timeout)
        assert pkt is not None, "broker closed the connection"
        return pkt

    def expect(self, name: str, timeout: float = TIMEOUT) -> Pkt:
        pkt = self.recv(timeout)
        assert pkt.name == name, f"expected {name}, got {pkt!r}"
        return pkt

    def wait_closed(self, timeout: float = TIMEOUT) -> list[Pkt]:
        """Read until the broker closes the connection; returns what came before the close."""
        got: list[Pkt] = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"connection still open after {timeout}s; got {got}")
            try:
                pkt = self.recv_or_close(remaining)
            except AssertionError:
                raise AssertionError(f"connection still open after {timeout}s; got {got}") from None
            if pkt is None:
                return got
            got.append(pkt)

    def read_until_closed(self, timeout: float = TIMEOUT) -> bytes:
        """The bytes the broker sends until it closes, undecoded (for replies whose layout
        the client cannot know, e.g. to an unknown protocol level)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except TimeoutError:
            raise AssertionError(f"connection still open after {timeout}s") from None
        self.closed = True
        data = bytes(self.buf)
        self.buf.clear()
        return data


class RawFactory:
    """``raw(broker, version)`` opens a RawClient; ``raw.connected(...)`` also completes
    CONNECT. Every socket is closed by :meth:`close_all` (at teardown)."""

    def __init__(self) -> None:
        self.opened: list[RawClient] = []

    def __call__(
        self, broker: Any, version: int = 4, receive_buffer: int | None = None
    ) -> RawClient:
        client = RawClient(broker.host, broker.port, version, receive_buffer)
        self.opened.append(client)
        return client

    def connected(
        self,
        broker: Any,
        client_id: str,
        version: int = 4,
        clean: bool = True,
        session_expiry: int | None = None,
        props: RawProps | None = None,
        *,
        keep_alive: int = 60,
        will: Will | None = None,
    ) -> tuple[RawClient, Pkt]:
        """A raw client whose CONNECT was accepted; returns (client, CONNACK)."""
        client = self(broker, version)
        connack = client.connect(client_id, clean, keep_alive, props, session_expiry, will)
        assert connack is not None, f"broker closed instead of sending CONNACK to {client_id!r}"
        assert connack.name == "CONNACK", connack
        assert connack.reason_code == 0, f"CONNACK refused: {connack!r}"
        return client, connack

    def close_all(self) -> None:
        for client in self.opened:
            client.drop()
