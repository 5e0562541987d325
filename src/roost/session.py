"""Plain-data session state [MQTT 4.1]: subscriptions, outbound inflight and queue,
inbound QoS 2 packet ids, packet-id allocation and the queue's drop policy.

No I/O here: the protocol layer drives a session, a store records it.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from itertools import count, islice
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from roost.codec import Will
from roost.errors import PacketIdsExhausted
from roost.message import Message

if TYPE_CHECKING:
    from roost.core import ClientRights

NEVER_EXPIRES = 0xFFFFFFFF  # Session Expiry Interval meaning "does not expire" [MQTT-3.1.2.11.2]
# Shared by every session without inbound QoS 2 flows: ``frozenset()`` makes a new 216-byte
# object on each call.
NO_PACKET_IDS: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class SubscriptionOptions:
    """What one subscription asked for [MQTT-3.8.3.1]."""

    qos: int = 0
    no_local: bool = False
    retain_as_published: bool = False
    retain_handling: int = 0
    identifier: int | None = None


class Delivery:
    """One message on its way to one session: the message plus per-recipient details."""

    __slots__ = ("message", "qos", "retain", "seq", "subscription_ids", "ticket")

    def __init__(
        self, message: Message, qos: int, retain: bool, subscription_ids: tuple[int, ...] = ()
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.subscription_ids = subscription_ids
        self.seq = 0  # position in its session's stored order; 0 while not stored
        self.ticket = 0  # its entry in a DeliveryQueue; 0 while not queued


class DeliveryQueue:
    """Deliveries waiting to be sent, oldest first, shaped for the drop policy of a full
    queue: the oldest QoS 0 delivery and the expired ones are found without a scan.

    Two indexes refer to queued deliveries: the QoS 0 ones in order, and a heap of the
    expiring ones by expiry time. A delivery leaving from the middle only loses its ticket
    and is skipped where it is met later; a structure holding more such stale entries than
    live ones is rebuilt. So every operation is amortised O(1) (O(log n) for an expiring
    message) and memory stays within twice the queue. The head is always live.
    """

    __slots__ = (
        "_count",
        "_expiring",
        "_expiring_count",
        "_items",
        "_qos0",
        "_qos0_count",
        "_tickets",
    )

    def __init__(self) -> None:
        self._items: deque[Delivery] = deque()
        self._count = 0
        self._qos0: deque[Delivery] = deque()
        self._qos0_count = 0
        self._expiring: list[tuple[float, int, Delivery]] = []  # (expires at, ticket, ...)
        self._expiring_count = 0
        self._tickets = count(1)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Delivery]:
        return (delivery for delivery in self._items if delivery.ticket)

    def __getitem__(self, index: int) -> Delivery:
        """The delivery ``index`` places from the head: O(1) for the head, the one a
        sender peeks at."""
        if index == 0:
            return self._items[0]  # the head is always live
        for delivery in islice(self, index, None):
            return delivery
        raise IndexError(index)

    @property
    def qos0_count(self) -> int:
        return self._qos0_count

    def append(self, delivery: Delivery) -> None:
        self._items.append(delivery)
        if delivery.qos == 0:
            self._qos0.append(delivery)
        self._added(delivery)

    def appendleft(self, delivery: Delivery) -> None:
        self._items.appendleft(delivery)
        if delivery.qos == 0:
            self._qos0.appendleft(delivery)
        self._added(delivery)

    def popleft(self) -> Delivery:
        items = self._items
        delivery = items.popleft()
        if delivery.qos == 0:
            qos0 = self._qos0
            while qos0.popleft() is not delivery:
                pass  # stale entries of QoS 0 deliveries that expired
        self._removed(delivery)
        while items and not items[0].ticket:
            items.popleft()
        return delivery

    def pop_oldest_qos0(self) -> Delivery | None:
        """Remove and return the oldest QoS 0 delivery, if any."""
        qos0 = self._qos0
        while qos0:
            delivery = qos0.popleft()
            if delivery.ticket:
                self._removed(delivery)
                self._tidy()
                return delivery
        return None

    def pop_expired(self, now: float) -> list[Delivery]:
        """Remove and return the deliveries whose message has expired at ``now``."""
        heap = self._expiring
        expired: list[Delivery] = []
        while heap and heap[0][0] <= now:
            _, ticket, delivery = heapq.heappop(heap)
            if delivery.ticket == ticket:
                self._removed(delivery)
                expired.append(delivery)
        self._tidy()
        return expired

    def _added(self, delivery: Delivery) -> None:
        ticket = delivery.ticket = next(self._tickets)
        self._count += 1
        if delivery.qos == 0:
            self._qos0_count += 1
        expires_at = delivery.message.expires_at
        if expires_at is not None:
            heapq.heappush(self._expiring, (expires_at, ticket, delivery))
            self._expiring_count += 1

    def _removed(self, delivery: Delivery) -> None:
        """Account for a delivery leaving; its heap entry, if any, is stale from now on."""
        delivery.ticket = 0
        self._count -= 1
        if delivery.qos == 0:
            self._qos0_count -= 1
        if delivery.message.expires_at is not None:
            self._expiring_count -= 1
            heap = self._expiring
            if len(heap) > 2 * self._expiring_count:
                heap[:] = [entry for entry in heap if entry[2].ticket == entry[1]]
                heapq.heapify(heap)  # in place: pop_expired may be walking it

    def _tidy(self) -> None:
        """After a removal from the middle: drop stale entries at the head, and rebuild
        an index that is mostly stale."""
        items = self._items
        while items and not items[0].ticket:
            items.popleft()
        if len(items) > 2 * self._count:
            self._items = deque(delivery for delivery in items if delivery.ticket)
        if len(self._qos0) > 2 * self._qos0_count:
            self._qos0 = deque(delivery for delivery in self._qos0 if delivery.ticket)


class OutboundState(IntEnum):
    """Where an outbound QoS 1/2 flow stands."""

    QUEUED = 0  # not sent (as stored)
    AWAITING_PUBACK = 1
    AWAITING_PUBREC = 2
    AWAITING_PUBCOMP = 3


class Inflight:
    """A delivery sent to the client and not yet completely acknowledged."""

    __slots__ = ("delivery", "state")

    def __init__(self, delivery: Delivery, state: OutboundState) -> None:
        self.delivery = delivery
        self.state = state


# Read-only, so every session without subscriptions (flows in flight) can share one.
NO_SUBSCRIPTIONS: Mapping[str, SubscriptionOptions] = MappingProxyType({})
NO_INFLIGHT: Mapping[int, Inflight] = MappingProxyType({})


class SessionRecorder(Protocol):
    """What a persistent session needs of the store that records it: one call per change
    (every store satisfies it)."""

    def save_session(self, session: Session) -> None: ...

    def delete_session(self, session: Session) -> None: ...

    def save_subscription(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None: ...

    def delete_subscription(self, client_id: str, topic_filter: str) -> None: ...

    def save_delivery(self, client_id: str, delivery: Delivery) -> None: ...

    def update_delivery(
        self, client_id: str, delivery: Delivery, state: OutboundState, packet_id: int
    ) -> None: ...

    def delete_delivery(self, client_id: str, delivery: Delivery) -> None: ...

    def save_inbound_qos2(self, client_id: str, packet_id: int) -> None: ...

    def delete_inbound_qos2(self, client_id: str, packet_id: int) -> None: ...


class Session:
    """The server-side state of one ClientID, which may outlive its network connections.

    Every change goes through a method here, which also records it in ``store`` when the
    session is persistent (expiry interval > 0): a session is in the store exactly while
    it is persistent.
    """

    __slots__ = (
        "acl_rights",
        "client_id",
        "expires_at",
        "expiry_interval",
        "identified",
        "inbound_qos2",
        "inflight",
        "next_packet_id",
        "next_seq",
        "queue",
        "store",
        "subscriptions",
        "username",
        "will",
        "will_due",
    )

    def __init__(self, client_id: str, expiry_interval: int = 0) -> None:
        self.client_id = client_id
        self.expiry_interval = expiry_interval
        self.expires_at: float | None = None  # set while no connection holds the session
        # Subscriptions, flows in flight, the queue and the inbound set start as shared
        # empty immutables and become a dict / DeliveryQueue / set when first needed: an
        # empty dict costs 64 bytes, an empty set 216, an empty DeliveryQueue about 1.7 KB,
        # and most sessions never queue (an idle connection's budget is about 1.5 KB).
        self.subscriptions: Mapping[str, SubscriptionOptions] = NO_SUBSCRIPTIONS
        self.inflight: Mapping[int, Inflight] = NO_INFLIGHT
        self.queue: DeliveryQueue | tuple[()] = ()
        self.inbound_qos2: set[int] | frozenset[int] = NO_PACKET_IDS  # PUBREC sent, no PUBREL
        self.next_packet_id = 1
        self.next_seq = 1
        # While connected: the connection's will (stored, so a crash does not lose it);
        # after the connection ended: a will waiting for its delay (will_due is set).
        self.will: Will | None = None
        self.will_due: float | None = None
        self.store: SessionRecorder | None = None
        # Whose session it is, for authorization: the user name of the connection that
        # opened it (None: anonymous). Not identified: made or loaded without an owner (a
        # session held for a client on its way from another node, or stored by a version
        # that did not record owners); an ACL then lets it read nothing.
        self.username: str | None = None
        self.identified = False
        self.acl_rights: ClientRights | None = None  # the owner's, compiled by the core

    def set_owner(self, username: str | None) -> None:
        """The session belongs to the client with ``username`` (None: anonymous)."""
        self.username = username
        self.identified = True
        self.acl_rights = None

    def owned_by(self, username: str | None) -> bool:
        return self.identified and self.username == username

    # -- persistence ------------------------------------------------------------------------

    def attach_store(self, store: SessionRecorder) -> None:
        """Record this (new) session if it is persistent."""
        if self.expiry_interval:
            self.store = store
            store.save_session(self)

    def set_expiry_interval(self, interval: int, store: SessionRecorder) -> None:
        """Change the expiry interval; a session that stops being persistent leaves the
        store (one that was not persistent never becomes so after creation)."""
        self.expiry_interval = interval
        if self.store is not None and not interval:
            self.store.delete_session(self)
            self.store = None
        self.save()

    def save(self) -> None:
        """Record the session's own fields (expiry, pending will)."""
        if self.store is not None:
            self.store.save_session(self)

    def forget(self) -> None:
        """The session ends: remove its record."""
        if self.store is not None:
            self.store.delete_session(self)
            self.store = None

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, topic_filter: str, options: SubscriptionOptions) -> None:
        subscriptions = self.subscriptions
        if not isinstance(subscriptions, dict):
            subscriptions = self.subscriptions = {}
        subscriptions[topic_filter] = options
        if self.store is not None:
            self.store.save_subscription(self.client_id, topic_filter, options)

    def unsubscribe(self, topic_filter: str) -> None:
        subscriptions = self.subscriptions
        if not isinstance(subscriptions, dict) or subscriptions.pop(topic_filter, None) is None:
            return
        if self.store is not None:
            self.store.delete_subscription(self.client_id, topic_filter)

    # -- outbound messages ----------------------------------------------------------------

    def enqueue(self, delivery: Delivery, limit: int, now: float) -> bool:
        """Queue a delivery; False if a delivery was dropped for want of room (this one,
        or the oldest queued QoS 0 one that made room for it): the caller counts it.

        Drop policy when ``limit`` deliveries are queued: expired messages are removed
        first [MQTT-3.3.2-5]; then the oldest queued QoS 0 message is dropped to make room;
        if none is queued, the new message is dropped (QoS 0 and QoS>0 alike), so what is
        already queued keeps its place and order.
        """
        queue = self.queue
        if not isinstance(queue, DeliveryQueue):
            if limit <= 0:
                return False
            queue = self.queue = DeliveryQueue()
        made_room = True
        if len(queue) >= limit:
            for expired in queue.pop_expired(now):
                self.discard(expired)
            if len(queue) >= limit:
                if queue.pop_oldest_qos0() is None:
                    return False
                made_room = False
        queue.append(delivery)
        if delivery.qos and self.store is not None:
            delivery.seq = self.next_seq
            self.next_seq += 1
            self.store.save_delivery(self.client_id, delivery)
        return made_room

    @property
    def queued_qos0(self) -> int:
        """QoS 0 deliveries in the queue."""
        return self.queue.qos0_count if isinstance(self.queue, DeliveryQueue) else 0

    def unsend(self, packet_ids: list[int]) -> None:
        """Put deliveries sent under ``packet_ids`` (in send order) back at the head of
        the queue, to be sent again under new identifiers: a resumed client may allow
        fewer messages in flight than were outstanding [MQTT-3.3.4-9]."""
        queue = self.queue
        if not isinstance(queue, DeliveryQueue):
            queue = self.queue = DeliveryQueue()
        inflight = self.inflight
        assert isinstance(inflight, dict)
        for packet_id in reversed(packet_ids):
            delivery = inflight.pop(packet_id).delivery
            queue.appendleft(delivery)
            if self.store is not None:
                self.store.update_delivery(self.client_id, delivery, OutboundState.QUEUED, 0)

    def restore_queued(self, delivery: Delivery) -> None:
        """Put back a stored delivery at the end of the queue (loading, no limit)."""
        if not isinstance(self.queue, DeliveryQueue):
            self.queue = DeliveryQueue()
        self.queue.append(delivery)

    def dequeue(self) -> Delivery:
        queue = self.queue
        assert isinstance(queue, DeliveryQueue), "dequeue from an empty queue"
        delivery = queue.popleft()
        if not queue:
            self.queue = ()
        return delivery

    def discard(self, delivery: Delivery) -> None:
        """A delivery taken from the queue will not be sent (expired, too large)."""
        if delivery.seq and self.store is not None:
            self.store.delete_delivery(self.client_id, delivery)

    def allocate_packet_id(self) -> int:
        """A non-zero identifier not used by any unfinished outbound flow [MQTT-2.2.1-3]."""
        inflight = self.inflight
        if len(inflight) >= 65535:
            raise PacketIdsExhausted(self.client_id)
        packet_id = self.next_packet_id
        while packet_id in inflight:
            packet_id = packet_id % 65535 + 1
        self.next_packet_id = packet_id % 65535 + 1
        return packet_id

    def send(self, delivery: Delivery, packet_id: int) -> None:
        """Start the QoS 1/2 flow of a delivery under ``packet_id`` (from
        :meth:`allocate_packet_id`)."""
        state = OutboundState.AWAITING_PUBACK
        if delivery.qos == 2:
            state = OutboundState.AWAITING_PUBREC
        self._inflight()[packet_id] = Inflight(delivery, state)
        store = self.store
        if store is not None:
            if delivery.seq:
                store.update_delivery(self.client_id, delivery, state, packet_id)
            else:
                delivery.seq = self.next_seq
                self.next_seq += 1
                store.save_delivery(self.client_id, delivery)
                store.update_delivery(self.client_id, delivery, state, packet_id)

    def restore_inflight(self, packet_id: int, delivery: Delivery, state: OutboundState) -> None:
        """Put back a stored delivery that was in flight under ``packet_id`` (loading)."""
        self._inflight()[packet_id] = Inflight(delivery, state)

    def _inflight(self) -> dict[int, Inflight]:
        inflight = self.inflight
        if not isinstance(inflight, dict):
            inflight = self.inflight = {}
        return inflight

    def released(self, packet_id: int) -> None:
        """PUBREC received: the flow waits for PUBCOMP now (PUBREL is sent)."""
        inflight = self.inflight[packet_id]
        inflight.state = OutboundState.AWAITING_PUBCOMP
        if self.store is not None:
            self.store.update_delivery(
                self.client_id, inflight.delivery, OutboundState.AWAITING_PUBCOMP, packet_id
            )

    def complete(self, packet_id: int, expected: OutboundState) -> bool:
        """End an outbound flow if it is in the ``expected`` state; True if it was."""
        inflight = self.inflight.get(packet_id)
        if inflight is None or inflight.state is not expected:
            return False
        del self._inflight()[packet_id]
        if self.store is not None:
            self.store.delete_delivery(self.client_id, inflight.delivery)
        return True

    # -- inbound QoS 2 ----------------------------------------------------------------------

    def receive_qos2(self, packet_id: int) -> None:
        inbound = self.inbound_qos2
        if not isinstance(inbound, set):
            inbound = self.inbound_qos2 = set()
        inbound.add(packet_id)
        if self.store is not None:
            self.store.save_inbound_qos2(self.client_id, packet_id)

    def release_qos2(self, packet_id: int) -> bool:
        """PUBREL received; False if the packet identifier was unknown."""
        inbound = self.inbound_qos2
        if packet_id not in inbound:
            return False
        assert isinstance(inbound, set)
        inbound.remove(packet_id)
        if not inbound:
            self.inbound_qos2 = NO_PACKET_IDS  # an emptied set keeps its table
        if self.store is not None:
            self.store.delete_inbound_qos2(self.client_id, packet_id)
        return True
