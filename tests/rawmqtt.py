"""A tiny blocking raw-socket MQTT client for edge-case tests, plus helpers that build packet
bytes by hand (for input no well-behaved encoder would produce)."""

from __future__ import annotations

import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from paho_helpers import Collector, connect, disconnect
from roost.codec import Framer, encode
from roost.codec.packets import ConnAck, Connect, Packet, Will
from roost.codec.properties import NO_PROPERTIES, Properties

LEVELS = pytest.mark.parametrize("level", [4, 5], ids=["v311", "v5"])


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


class Connection:
    """One blocking TCP connection to the broker (TCP_NODELAY) with deadline-bounded reads."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _recv(self, deadline: float) -> bytes | None:
        """Bytes from the socket; None when ``deadline`` passes; b"" when closed."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        self.sock.settimeout(remaining)
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return b""

    def abort(self) -> None:
        """Close with a TCP RST instead of a FIN (SO_LINGER 0), like a network failure."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()


class RawClient(Connection):
    """One blocking TCP connection speaking MQTT through ``roost.codec``."""

    def __init__(self, host: str, port: int, timeout: float = 5.0) -> None:
        super().__init__(host, port, timeout)
        self.level = 5
        self.framer = Framer()
        self.framer.protocol_level = 5
        self._pending: deque[Packet] = deque()

    def set_level(self, level: int) -> None:
        self.level = level
        self.framer.protocol_level = level

    def send_packet(self, packet: Packet, level: int | None = None) -> None:
        self.send(encode(packet, self.level if level is None else level))

    def connect(
        self,
        client_id: str,
        level: int = 5,
        keep_alive: int = 60,
        clean_start: bool = True,
        will: Will | None = None,
        properties: Properties | None = None,
    ) -> ConnAck:
        """Send CONNECT and return the CONNACK (whatever its reason code)."""
        self.set_level(level)
        self.send_packet(
            Connect(
                client_id=client_id,
                protocol_level=level,
                clean_start=clean_start,
                keep_alive=keep_alive,
                will=will,
                properties=properties or NO_PROPERTIES,
            )
        )
        packet = self.recv_packet()
        assert isinstance(packet, ConnAck), f"expected CONNACK, got {packet!r}"
        return packet

    def recv_packet(self, timeout: float = 5.0) -> Packet:
        """The next packet from the server; AssertionError on timeout or close."""
        deadline = time.monotonic() + timeout
        while not self._pending:
            data = self._recv(deadline)
            if data is None:
                raise AssertionError(f"no packet from the server within {timeout}s")
            if not data:
                raise AssertionError("the server closed the connection")
            self.framer.feed(data)
            self._pending.extend(self.framer)
        return self._pending.popleft()

    def read_until_closed(self, timeout: float = 5.0) -> bytes:
        """Raw bytes received until the server closes; AssertionError if it stays open."""
        deadline = time.monotonic() + timeout
        chunks: list[bytes] = []
        while True:
            data = self._recv(deadline)
            if data is None:
                raise AssertionError(
                    f"server kept the connection open for {timeout}s (got {b''.join(chunks)!r})"
                )
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    def expect_closed(self, timeout: float = 5.0) -> list[Packet]:
        """Assert the server closes within ``timeout``; return the packets sent before that."""
        data = self.read_until_closed(timeout)
        self.framer.feed(data)
        packets = [*self._pending, *self.framer]
        self._pending.clear()
        return packets

    def expect_silence(self, seconds: float) -> None:
        """Assert that for ``seconds`` the server sends nothing and keeps the connection open."""
        assert not self._pending, f"unexpected packets {list(self._pending)}"
        deadline = time.monotonic() + seconds
        while (data := self._recv(deadline)) is not None:
            assert data, "the server closed the connection"
            self.framer.feed(data)
            packets = list(self.framer)
            assert not packets, f"unexpected packets {packets}"


class Clients:
    """Tracks the raw and paho clients of one test and closes them all at the end."""

    def __init__(self) -> None:
        self._raw: list[RawClient] = []
        self._paho: list[mqtt.Client] = []

    def raw(self, broker: Any, timeout: float = 5.0) -> RawClient:
        client = RawClient(broker.host, broker.port, timeout)
        self._raw.append(client)
        return client

    def paho(self, broker: Any, **kwargs: Any) -> tuple[mqtt.Client, Collector]:
        client, collector = connect(broker, **kwargs)
        self._paho.append(client)
        return client, collector

    def close(self) -> None:
        for client in self._paho:
            try:
                disconnect(client)
            except Exception:
                client.loop_stop()
        for raw in self._raw:
            raw.close()


def clients_fixture(name: str = "clients") -> Any:
    """A fixture for a test module (``clients = clients_fixture()``): a Clients tracker
    closed at teardown, before the test's brokers (it depends on ``make_broker``)."""

    @pytest.fixture(name=name)
    def tracked(make_broker: Callable[..., Any]) -> Iterator[Clients]:
        tracked = Clients()
        yield tracked
        tracked.close()

    return tracked
