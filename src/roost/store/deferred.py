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

from collections.abc import Iterable, Iterator

from roost.message import Message
from roost.session import Delivery, OutboundState

SEPARATOR = "\x00"  # never in an MQTT string [MQTT-1.5.4-2], so never in a client id


class Deferred:
    """One delivery listed in its message's row, in the state it was last recorded in;
    ``written`` once it has a row too."""

    __slots__ = ("client_id", "delivery", "due", "packet_id", "state", "written")

    def __init__(self, client_id: str, delivery: Delivery, due: float) -> None:
        self.client_id = client_id
        self.delivery = delivery
        self.due = due
        self.state = OutboundState.QUEUED
        self.packet_id = 0
        self.written = False


class DeferredDeliveries:
    """The listed deliveries not yet finished: those without a row in the order they fall
    due, those with one, and each message's list.

    Entries are found by their Delivery object, which a session keeps for the delivery's
    whole life: no (client id, seq) key is built and hashed on every call."""

    def __init__(self) -> None:
        self._unwritten: dict[Delivery, Deferred] = {}  # oldest first
        self._unwritten_of: dict[str, dict[Delivery, Deferred]] = {}  # client id -> its own
        self._written: dict[Delivery, Deferred] = {}  # given a row, still on their list
        # store id -> its list: the entry itself while it is the only one (the usual case:
        # no dict per message)
        self._by_message: dict[int, Deferred | dict[Delivery, Deferred]] = {}
        self._changed: dict[int, Message] = {}  # store id -> message, since take_changed

    def __len__(self) -> int:
        return len(self._unwritten) + len(self._written)

    def add(self, client_id: str, delivery: Delivery, due: float) -> str | None:
        """List a delivery of a message whose row is still to be inserted. The text of the
        message's list if the delivery is the first on it (the usual case: the caller puts
        it into the insert at once); None if the list is taken with the changed ones."""
        entry = Deferred(client_id, delivery, due)
        self._unwritten[delivery] = entry
        of_client = self._unwritten_of.get(client_id)
        if of_client is None:
            self._unwritten_of[client_id] = {delivery: entry}
        else:
            of_client[delivery] = entry
        message = delivery.message
        store_id = message.store_id
        by_message = self._by_message
        listed = by_message.get(store_id)
        if listed is None:
            by_message[store_id] = entry
            return _entry_text(entry)
        if isinstance(listed, Deferred):
            by_message[store_id] = {listed.delivery: listed, delivery: entry}
        else:
            listed[delivery] = entry
        self._changed[store_id] = message
        return None

    def touch(self, message: Message) -> None:
        """Have ``message``'s list taken with the changed ones (its row is rewritten)."""
        self._changed[message.store_id] = message

    def unwritten(self, delivery: Delivery) -> Deferred | None:
        """The listed delivery without a row yet, or None."""
        return self._unwritten.get(delivery)

    def finish(self, delivery: Delivery) -> Deferred | None:
        """Take a delivery off its message's list (None if it was not listed), while it
        still counts in the message's ``stored_deliveries``."""
        entry = self._unwritten.pop(delivery, None)
        if entry is None:
            entry = self._written.pop(delivery, None)
            if entry is None:
                return None
        else:
            self._forget_unwritten_of(entry.client_id, delivery)
        message = delivery.message
        store_id = message.store_id
        listed = self._by_message[store_id]
        if listed is entry:
            del self._by_message[store_id]
        else:
            assert isinstance(listed, dict)
            del listed[delivery]
            if not listed:
                del self._by_message[store_id]
        if message.stored_deliveries > 1:  # else the row goes with this delivery
            self._changed[store_id] = message
        return entry

    def fall_due(self, now: float) -> list[Deferred]:
        """The listed deliveries without a row that were listed ``defer`` ago or more; they
        count as written from now on (the caller writes their rows)."""
        unwritten = self._unwritten
        keys = []
        for key, entry in unwritten.items():
            if entry.due > now:
                break
            keys.append(key)
        due = []
        for key in keys:
            entry = self._written[key] = unwritten.pop(key)
            entry.written = True
            self._forget_unwritten_of(entry.client_id, key)
            due.append(entry)
        return due

    def write_all_of(self, client_id: str) -> list[Deferred]:
        """Every listed delivery of ``client_id`` without a row, oldest first; they count as
        written from now on (the caller writes their rows). A delivery given a row of its
        own takes those listed before it along: a session's rows then never show a later
        delivery in flight while an earlier one, sent before it, is only listed (and is
        rebuilt queued after a crash, so it would go out after the later one)."""
        of_client = self._unwritten_of.pop(client_id, None)
        if of_client is None:
            return []
        unwritten, written = self._unwritten, self._written
        for delivery, entry in of_client.items():
            del unwritten[delivery]
            written[delivery] = entry
            entry.written = True
        return list(of_client.values())

    def _forget_unwritten_of(self, client_id: str, delivery: Delivery) -> None:
        of_client = self._unwritten_of[client_id]
        del of_client[delivery]
        if not of_client:
            del self._unwritten_of[client_id]

    def next_due(self) -> float | None:
        """When the oldest listed delivery without a row falls due (None: there is none)."""
        for entry in self._unwritten.values():
            return entry.due
        return None

    def take_changed(self) -> list[tuple[int, str | None]]:
        """(store id, list text) of every message whose list changed and whose row stays
        (a message no stored delivery holds any more is deleted, or was never written)."""
        changed, self._changed = self._changed, {}
        by_message = self._by_message
        texts: list[tuple[int, str | None]] = []
        for store_id, message in changed.items():
            if message.stored_deliveries:
                listed = by_message.get(store_id)
                if listed is None:
                    texts.append((store_id, None))
                elif isinstance(listed, Deferred):
                    texts.append((store_id, _entry_text(listed)))
                else:
                    texts.append((store_id, encode_recipients(listed.values())))
        return texts


def encode_recipients(entries: Iterable[Deferred]) -> str:
    """Client id, seq, retain flag and subscription identifiers of each delivery."""
    return SEPARATOR.join(map(_entry_text, entries))


def _entry_text(entry: Deferred) -> str:
    delivery = entry.delivery
    ids = delivery.subscription_ids
    retain = "1" if delivery.retain else ""
    listed_ids = ",".join(map(str, ids)) if ids else ""
    return f"{entry.client_id}{SEPARATOR}{delivery.seq}{SEPARATOR}{retain}{SEPARATOR}{listed_ids}"


def decode_recipients(text: str) -> Iterator[tuple[str, int, bool, str]]:
    """(client id, seq, retain, subscription identifiers as stored) of each listed QoS 1
    delivery."""
    fields = text.split(SEPARATOR)
    for index in range(0, len(fields) - 3, 4):
        client_id, seq, retain, ids = fields[index : index + 4]
        yield client_id, int(seq), bool(retain), ids
