"""Fixtures for the integration tests: tracked paho clients and a tiny raw MQTT client.

``clients`` connects paho clients that record CONNACK flags, UNSUBACKs and DISCONNECT reason
codes, and stops every client's network loop at teardown. ``raw`` opens plain sockets that
speak hand-encoded MQTT 3.1.1 / 5.0, for flows paho cannot interrupt (a QoS 2 exchange cut in
the middle) and for checking exact CONNACK / DISCONNECT codes.
"""

from __future__ import annotations

import contextlib
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from paho_helpers import (
    TIMEOUT,
    V5,
    Collector,
    make_client,
    publish_and_wait,
    start,
    subscribe,
    wait_until,
)
from rawmqtt import Connection, frame, utf8, varint

# --------------------------------------------------------------------------------------------
# paho clients


class SessionCollector(Collector):
    """A Collector that also records the CONNACK flags and UNSUBACK reason codes."""

    def __init__(self) -> None:
        super().__init__()
        self.session_present: list[bool] = []
        self.unsubacks: list[list[int]] = []

    def on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        self.session_present.append(bool(getattr(flags, "session_present", False)))
        super().on_connect(client, userdata, flags, rc, props)

    def on_unsubscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None
    ) -> None:
        self.unsubacks.append([code_of(rc) for rc in rcs])

    def topics(self) -> list[str]:
        with self.lock:
            return [m.topic for m in self.messages]

    def by_payload(self, payload: bytes) -> list[mqtt.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.payload == payload]

    def wait_for_payload(self, payload: bytes, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        wait_until(lambda: bool(self.by_payload(payload)), timeout, f"message {payload!r}")
        return self.by_payload(payload)[0]

    def before(self, payload: bytes) -> list[mqtt.MQTTMessage]:
        """Messages received before the first one carrying ``payload`` (a marker)."""
        with self.lock:
            out = []
            for m in self.messages:
                if m.payload == payload:
                    return out
                out.append(m)
        raise AssertionError(f"marker {payload!r} not received")


def code_of(rc: Any) -> int:
    """The integer value of a paho ReasonCode (or a plain int)."""
    return int(getattr(rc, "value", rc))


class Conn:
    """One connected paho client with its collector; unknown attributes come from the
    collector (``messages``, ``wait_for_messages``, ``before``, ``connacks`` ...)."""

    def __init__(self, client: mqtt.Client, col: SessionCollector) -> None:
        self.client = client
        self.col = col

    def __getattr__(self, name: str) -> Any:
        return getattr(self.col, name)

    @property
    def connack_rc(self) -> int:
        return code_of(self.col.connacks[-1][0])

    @property
    def connack_props(self) -> Any:
        return self.col.connacks[-1][1]

    def sub(
        self,
        topic: str,
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        sub_id: int | None = None,
    ) -> list[int]:
        """Subscribe one filter (v5 options when the client speaks v5); wait for the SUBACK
        and return its reason codes as ints."""
        if self.client.protocol != V5:
            return [code_of(rc) for rc in subscribe(self.client, self.col, topic, qos)]
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        options = SubscribeOptions(
            qos=qos,
            noLocal=no_local,
            retainAsPublished=retain_as_published,
            retainHandling=retain_handling,
        )
        # The options carry the QoS: paho refuses a non-zero ``qos`` alongside them.
        codes = subscribe(self.client, self.col, topic, options=options, properties=props)
        return [code_of(rc) for rc in codes]

    def sub_many(self, filters: list[tuple[str, int]]) -> list[int]:
        """One SUBSCRIBE with several ``(filter, qos)``; returns the SUBACK codes."""
        return [code_of(rc) for rc in subscribe(self.client, self.col, filters)]

    def unsub(self, topics: str | list[str]) -> list[int]:
        """Unsubscribe and wait for the UNSUBACK; returns its reason codes (empty for 3.1.1)."""
        before = len(self.col.unsubacks)
        self.client.unsubscribe(topics)
        wait_until(lambda: len(self.col.unsubacks) > before, what="UNSUBACK")
        return self.col.unsubacks[before]

    def pub(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish; for QoS > 0 wait until the flow with the broker completes."""
        publish_and_wait(self.client, topic, payload, qos, retain, properties=properties)

    def stop(self) -> None:
        """Disconnect normally (if still connected) and stop the network loop."""
        try:
            if self.client.is_connected():
                self.client.disconnect()
        finally:
            self.client.loop_stop()


class Clients:
    """Connects paho clients and remembers them so teardown can stop their loops."""

    def __init__(self) -> None:
        self.all: list[Conn] = []

    def make(self, client_id: str = "", version: int = V5, clean: bool = True) -> Conn:
        """A paho client wired to a SessionCollector, not yet connected."""
        col = SessionCollector()
        client, _ = make_client(client_id, version, clean, col)
        client.on_unsubscribe = col.on_unsubscribe
        # Never reconnect on its own within a test: a client closed by the broker (takeover)
        # must stay closed.
        client.reconnect_delay_set(min_delay=60, max_delay=120)
        conn = Conn(client, col)
        self.all.append(conn)
        return conn

    def connect(
        self,
        broker: Any,
        client_id: str = "",
        version: int = V5,
        clean: bool = True,
        expect_success: bool = True,
        **options: Any,
    ) -> Conn:
        """Connect, start the loop and wait for the CONNACK (which must be a success unless
        ``expect_success`` is false). ``options`` (``session_expiry``, ``keepalive``,
        ``properties``) go to ``paho_helpers.start``."""
        conn = self.make(client_id, version, clean)
        start(conn.client, conn.col, broker, client_id, version, clean, **options)
        if expect_success:
            assert conn.connack_rc == 0, f"CONNACK refused for {client_id!r}: {conn.connack_rc}"
        return conn

    def close_all(self) -> None:
        for conn in self.all:
            with contextlib.suppress(Exception):
                conn.stop()


@pytest.fixture
def clients() -> Iterator[Clients]:
    c = Clients()
    yield c
    c.close_all()


# --------------------------------------------------------------------------------------------
# raw MQTT over a socket

# MQTT 5 properties by paho name: (identifier, wire type).
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


class RawClient(Connection):
    """A blocking MQTT client over a plain socket: one packet at a time, no automatic acks,
    and its own hand-written packet decoder (independent of ``roost.codec``).
    ``version`` is the protocol level: 4 = MQTT 3.1.1, 5 = MQTT 5.0."""

    def __init__(self, host: str, port: int, version: int = 4) -> None:
        super().__init__(host, port, TIMEOUT)
        self.version = version
        self.buf = bytearray()
        self.closed = False

    # -- sending --------------------------------------------------------------------------

    def send_connect(
        self,
        client_id: str,
        clean: bool = True,
        keep_alive: int = 60,
        props: RawProps | None = None,
        session_expiry: int | None = None,
    ) -> None:
        props = list(props or [])
        if session_expiry is not None:
            props.append(("SessionExpiryInterval", session_expiry))
        body = utf8("MQTT") + bytes([self.version, 0x02 if clean else 0x00])
        body += struct.pack("!H", keep_alive)
        if self.version == 5:
            body += encode_props(props)
        body += utf8(client_id)
        self.send(frame(0x10, body))

    def connect(
        self,
        client_id: str,
        clean: bool = True,
        keep_alive: int = 60,
        props: RawProps | None = None,
        session_expiry: int | None = None,
    ) -> Pkt | None:
        """Send CONNECT and return the broker's first packet (None if it just closed)."""
        self.send_connect(client_id, clean, keep_alive, props, session_expiry)
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

    def ack(self, name: str, packet_id: int) -> None:
        """PUBACK / PUBREC / PUBREL / PUBCOMP with reason Success."""
        first = (TYPES[name] << 4) | (0x02 if name == "PUBREL" else 0)
        self.send(frame(first, struct.pack("!H", packet_id)))

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

    def disconnect(self) -> None:
        """A normal DISCONNECT; the caller then drops the socket."""
        self.send(b"\xe0\x00")

    def drop(self) -> None:
        """Close the socket (without DISCONNECT unless one was sent)."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.close()

    # -- receiving ------------------------------------------------------------------------

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False on EOF / reset; TimeoutError at the deadline."""
        try:
            chunk = self._recv(deadline)
        except OSError:
            return False
        if chunk is None:
            raise TimeoutError
        if not chunk:
            return False
        self.buf += chunk
        return True

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
        return self._decode(first >> 4, first & 0x0F, body)

    def _decode(self, ptype: int, flags: int, body: bytes) -> Pkt:
        pkt = Pkt(NAMES.get(ptype, f"type{ptype}"), flags, body)
        r = _Reader(body)
        v5 = self.version == 5
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
        elif pkt.name == "DISCONNECT" and r.left():
            pkt.reason_code = r.u8()
            if r.left():
                pkt.props = r.props()
        return pkt

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


class RawFactory:
    """``raw(broker, version)`` opens a RawClient; ``raw.connected(...)`` also completes
    CONNECT. Every socket is closed at teardown."""

    def __init__(self) -> None:
        self.opened: list[RawClient] = []

    def __call__(self, broker: Any, version: int = 4) -> RawClient:
        client = RawClient(broker.host, broker.port, version)
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
    ) -> tuple[RawClient, Pkt]:
        """A raw client whose CONNECT was accepted; returns (client, CONNACK)."""
        client = self(broker, version)
        connack = client.connect(client_id, clean, props=props, session_expiry=session_expiry)
        assert connack is not None, f"broker closed instead of sending CONNACK to {client_id!r}"
        assert connack.name == "CONNACK", connack
        assert connack.reason_code == 0, f"CONNACK refused: {connack!r}"
        return client, connack

    def close_all(self) -> None:
        for client in self.opened:
            client.drop()


@pytest.fixture
def raw() -> Iterator[RawFactory]:
    factory = RawFactory()
    yield factory
    factory.close_all()
