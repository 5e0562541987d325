"""Incremental framer: bytes from the network in, decoded packets out.

Holds the unread input as one ``bytes`` object and an offset: a read that ends on a
packet boundary (the usual case) is decoded in place without copying the buffer, and
dropped once its last packet is out, so an idle connection holds no input. A packet
split across reads whose size is known is gathered in a list of chunks and joined once,
so a large packet arriving in many small reads costs linear, not quadratic, copying.
"""

from __future__ import annotations

from collections.abc import Iterator

from roost.codec.decode import decode_packet
from roost.codec.packets import MQTT_3_1_1, Connect, Packet, Publish
from roost.errors import MalformedPacket, PacketTooLarge

MAX_PACKET_SIZE = 268_435_460  # 1 + 4-byte Remaining Length + 268435455 [MQTT 2.1.4]


class Framer:
    """Splits a byte stream into packets, decoding each at the connection's level.

    ``protocol_level`` starts at 4 and follows the level of a decoded CONNECT. A packet
    larger than ``max_packet_size`` raises :class:`PacketTooLarge` as soon as its fixed
    header is readable, before its body arrives.
    """

    __slots__ = ("_buf", "_chunks", "_missing", "_pos", "max_packet_size", "protocol_level")

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        self.max_packet_size = max_packet_size
        self.protocol_level = MQTT_3_1_1
        self._buf = b""
        self._pos = 0
        self._chunks: list[bytes] | None = None  # parts of one incomplete packet of known size
        self._missing = 0  # bytes that packet still lacks

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data) if type(data) is not bytes else data
        chunks = self._chunks
        if chunks is not None:
            chunks.append(data)
            self._missing -= len(data)
            if self._missing > 0:
                return
            data = b"".join(chunks)
            self._chunks = None
        elif self._pos < len(self._buf):
            data = self._buf[self._pos :] + data
        self._buf = data
        self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as packets."""
        if self._chunks is not None:
            return sum(map(len, self._chunks))
        return len(self._buf) - self._pos

    def clear(self) -> None:
        """Drop whatever input is buffered (the connection is closed)."""
        self._buf = b""
        self._pos = 0
        self._chunks = None
        self._missing = 0

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None if the buffer holds only part of one."""
        buf = self._buf
        start = self._pos
        size = len(buf)
        pos = start + 1
        if pos >= size:
            return None
        byte = buf[pos]
        pos += 1
        remaining = byte & 0x7F
        shift = 7
        while byte & 0x80:
            if shift > 21:
                raise MalformedPacket("remaining length longer than 4 bytes [MQTT-1.5.5]")
            if pos >= size:
                return None
            byte = buf[pos]
            pos += 1
            remaining |= (byte & 0x7F) << shift
            shift += 7
        end = pos + remaining
        if end - start > self.max_packet_size:
            raise PacketTooLarge(
                f"packet of {end - start} bytes exceeds maximum packet size {self.max_packet_size}"
            )
        if end > size:
            self._chunks = [buf[start:]]
            self._missing = end - size
            self._buf = b""
            self._pos = 0
            return None
        if end == size:  # all read: hold no input between reads (an idle connection's)
            self._buf = b""
            self._pos = 0
        else:
            self._pos = end
        packet = decode_packet(buf[start], buf[pos:end], self.protocol_level)
        if type(packet) is Publish:
            if not packet.qos:
                packet.frame = buf[start:end]
        elif type(packet) is Connect:
            self.protocol_level = packet.protocol_level
        return packet

    def __iter__(self) -> Iterator[Packet]:
        """Every complete packet in the buffer, in order."""
        while (packet := self.next_packet()) is not None:
            yield packet
