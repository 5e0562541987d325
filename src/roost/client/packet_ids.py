"""Packet identifier allocation for one connection [MQTT 2.2.1]."""

from __future__ import annotations

from roost.client.errors import ClientError

MAX_PACKET_ID = 65535


class PacketIds:
    """Identifiers 1..65535: ``allocate`` hands out one not in use, ``release`` frees it."""

    def __init__(self) -> None:
        self._in_use: set[int] = set()
        self._next = 1

    def __len__(self) -> int:
        return len(self._in_use)

    def __contains__(self, packet_id: object) -> bool:
        return packet_id in self._in_use

    def allocate(self) -> int:
        """The next free identifier after the last one allocated; ClientError if none is free."""
        if len(self._in_use) == MAX_PACKET_ID:
            raise ClientError(f"all {MAX_PACKET_ID} packet identifiers are in use")
        while self._next in self._in_use:
            self._next = self._next % MAX_PACKET_ID + 1
        packet_id = self._next
        self._in_use.add(packet_id)
        self._next = packet_id % MAX_PACKET_ID + 1
        return packet_id

    def release(self, packet_id: int) -> None:
        """Free ``packet_id`` once its flow has completed."""
        self._in_use.discard(packet_id)
