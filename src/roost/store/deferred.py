"""QoS 1 deliveries written into their message's row instead of rows of their own.

Most QoS 1 deliveries to a connected subscriber are acknowledged within milliseconds: a row
of its own for each would be inserted by one commit and deleted by the next. Instead, a
QoS 1 delivery saved while its message's row is still to be inserted is listed in that row
(its ``recipients``), so the commit that makes the message durable makes the delivery
durable too: a restart rebuilds the delivery from the list. A delivery still unfinished
``defer`` seconds later gets a row of its own, with its state and packet identifier. A
finished delivery leaves the list, which is rewritten (or goes with the message's row).

This module keeps that bookkeeping and the list's text form; the SQL is the store's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from roost.message import Message
from roost.session import Delivery, OutboundState

Key = tuple[str, int]  # client id, delivery seq

SEPARATOR = "\x00"  # never in an MQTT string [MQTT-1.5.4-2], so never in a client id


class Deferred:
    """One delivery listed in its message's row; ``written`` once it has a row too."""

    __slots__ = ("client_id", "delivery", "due", "finished", "packet_id", "state", "written")

    def __init__(self, client_id: str, delivery: Delivery, due: float) -> None:
        self.client_id = client_id
        self.delivery = delivery
        self.due = due
        self.state = OutboundState.QUEUED
        self.packet_id = 0
        self.written = False
        self.finished = False


class DeferredDeliveries:
    """The listed deliveries not yet finished, by message and in the order they fall due."""

    def __init__(self) -> None:
        self._entries: dict[Key, Deferred] = {}
        self._by_message: dict[int, dict[Key, Deferred]] = {}  # store id -> its list
        self._due: deque[Deferred] = deque()  # oldest first; finished ones are skipped
        self._changed: dict[int, Message] = {}  # store id -> message, since take_changed

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, client_id: str, delivery: Delivery, due: float) -> None:
        entry = Deferred(client_id, delivery, due)
        key = (client_id, delivery.seq)
        self._entries[key] = entry
        message = delivery.message
        listed = self._by_message.get(message.store_id)
        if listed is None:
            listed = self._by_message[message.store_id] = {}
        listed[key] = entry
        self._due.append(entry)
        self._changed[message.store_id] = message

    def get(self, client_id: str, seq: int) -> Deferred | None:
        return self._entries.get((client_id, seq))

    def finish(self, client_id: str, seq: int) -> Deferred | None:
        """Take a delivery off its message's list (None if it was not listed)."""
        key = (client_id, seq)
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        entry.finished = True
        message = entry.delivery.message
        listed = self._by_message[message.store_id]
        del listed[key]
        if not listed:
            del self._by_message[message.store_id]
        self._changed[message.store_id] = message
        return entry

    def fall_due(self, now: float) -> Iterator[Deferred]:
        """The unfinished deliveries listed at least ``defer`` ago and not yet written,
        marked written (the caller writes their rows)."""
        due = self._due
        while due and (due[0].finished or due[0].due <= now):
            entry = due.popleft()
            if not entry.finished:
                entry.written = True
                yield entry

    def next_due(self) -> float | None:
        """When the oldest unfinished delivery not yet written falls due (None: none)."""
        due = self._due
        while due and due[0].finished:
            due.popleft()
        return due[0].due if due else None

    def unwritten(self) -> Iterator[Deferred]:
        """Every unfinished delivery without a row, marked written (closing)."""
        return self.fall_due(float("inf"))

    def take_changed(self) -> Iterator[tuple[int, str | None]]:
        """(store id, list text) of every message whose list changed and whose row stays
        (a message no stored delivery holds any more is deleted, or was never written)."""
        changed, self._changed = self._changed, {}
        by_message = self._by_message
        for store_id, message in changed.items():
            if message.stored_deliveries:
                listed = by_message.get(store_id)
                yield store_id, encode_recipients(listed.values()) if listed else None

    def has_changes(self) -> bool:
        return bool(self._changed)


def encode_recipients(entries: Iterable[Deferred]) -> str:
    """Client id, seq, retain flag and subscription identifiers of each delivery."""
    fields: list[str] = []
    for entry in entries:
        delivery = entry.delivery
        fields += (
            entry.client_id,
            str(delivery.seq),
            "1" if delivery.retain else "",
            ",".join(map(str, delivery.subscription_ids)),
        )
    return SEPARATOR.join(fields)


def decode_recipients(text: str) -> Iterator[tuple[str, int, bool, str]]:
    """(client id, seq, retain, subscription identifiers as stored) of each listed QoS 1
    delivery."""
    fields = text.split(SEPARATOR)
    for index in range(0, len(fields) - 3, 4):
        client_id, seq, retain, ids = fields[index : index + 4]
        yield client_id, int(seq), bool(retain), ids
