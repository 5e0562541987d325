"""Incremental framer: bytes from the network in, decoded packets out.

Keeps one bytearray and a read offset; consumed bytes are dropped from the front on the
next :meth:`Framer.feed` (cheap for a bytearray), so many packets per read cost little.
"""

from __future__ import annotations

from collections.abc import Iterator

from roost.codec.decode import decode_packet
from roost.codec.packets import MQTT_3_1_1, Connect, Packet
from roost.errors import MalformedPacket, PacketTooLarge

MAX_PACKET_SIZE = 268_435_460  # 1 + 4-byte Remaining Length + 268435455 [MQTT 2.1.4]


class Framer:
    """Splits a byte stream into packets, decoding each at the connection's level.

    ``protocol_level`` starts at 4 and follows the level of a decoded CONNECT. A packet
    larger than ``max_packet_size`` raises :class:`PacketTooLarge` as soon as its fixed
    header is readable, before its body arrives.
    """

    def __init__(self, max_packet_size: int = MAX_PACKET_SIZE) -> None:
        self.max_packet_size = max_packet_size
        self.protocol_level = MQTT_3_1_1
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None if the buffer holds only part of one."""
        buf = self._buf
        start = self._pos
        size = len(buf)
        pos = start + 1
        remaining = 0
        for shift in (0, 7, 14, 21):
            if pos >= size:
                return None
            byte = buf[pos]
            pos += 1
            remaining |= (byte & 0x7F) << shift
            if byte < 0x80:
                break
        else:
            raise MalformedPacket("remaining length longer than 4 bytes [MQTT-1.5.5]")
        end = pos + remaining
        if end - start > self.max_packet_size:
            raise PacketTooLarge(
                f"packet of {end - start} bytes exceeds maximum packet size {self.max_packet_size}"
            )
        if end > size:
            return None
        self._pos = end
        packet = decode_packet(buf[start], memoryview(buf)[pos:end].tobytes(), self.protocol_level)
        if isinstance(packet, Connect):
            self.protocol_level = packet.protocol_level
        return packet

    def __iter__(self) -> Iterator[Packet]:
        """Every complete packet in the buffer, in order."""
        while (packet := self.next_packet()) is not None:
            yield packet
