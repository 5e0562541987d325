"""Plain-data session state [MQTT 4.1]: subscriptions, outbound inflight and queue,
inbound QoS 2 packet ids, packet-id allocation and the queue's drop policy.

No I/O here: the protocol layer drives a session, a store records it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import IntEnum

from roost.codec import Will
from roost.message import Message

NEVER_EXPIRES = 0xFFFFFFFF  # Session Expiry Interval meaning "does not expire" [MQTT-3.1.2.11.2]


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

    __slots__ = ("message", "qos", "retain", "subscription_ids")

    def __init__(
        self, message: Message, qos: int, retain: bool, subscription_ids: tuple[int, ...] = ()
    ) -> None:
        self.message = message
        self.qos = qos
        self.retain = retain
        self.subscription_ids = subscription_ids


class OutboundState(IntEnum):
    """Where an outbound QoS 1/2 flow stands."""

    AWAITING_PUBACK = 1
    AWAITING_PUBREC = 2
    AWAITING_PUBCOMP = 3


class Inflight:
    """A delivery sent to the client and not yet completely acknowledged."""

    __slots__ = ("delivery", "state")

    def __init__(self, delivery: Delivery, state: OutboundState) -> None:
        self.delivery = delivery
        self.state = state


class PacketIdsExhausted(Exception):
    """All 65535 packet identifiers are in use."""


class Session:
    """The server-side state of one ClientID, which may outlive its network connections."""

    __slots__ = (
        "client_id",
        "expires_at",
        "expiry_interval",
        "inbound_qos2",
        "inflight",
        "next_packet_id",
        "queue",
        "queued_qos0",
        "subscriptions",
        "will",
        "will_due",
    )

    def __init__(self, client_id: str, expiry_interval: int = 0) -> None:
        self.client_id = client_id
        self.expiry_interval = expiry_interval
        self.expires_at: float | None = None  # set while no connection holds the session
        self.subscriptions: dict[str, SubscriptionOptions] = {}
        self.inflight: dict[int, Inflight] = {}  # packet id -> flow, in send order
        self.queue: deque[Delivery] = deque()
        self.queued_qos0 = 0
        self.inbound_qos2: set[int] = set()  # PUBREC sent, PUBREL not yet received
        self.next_packet_id = 1
        self.will: Will | None = None  # a will waiting for its delay to pass
        self.will_due: float | None = None

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

    def enqueue(self, delivery: Delivery, limit: int) -> bool:
        """Queue a delivery; False if it was dropped.

        Drop policy when ``limit`` deliveries are queued: the oldest queued QoS 0 message is
        dropped to make room; if none is queued, the new message is dropped (QoS 0 and QoS>0
        alike), so what is already queued keeps its place and order.
        """
        queue = self.queue
        if len(queue) >= limit:
            if not self.queued_qos0:
                return False
            for index, queued in enumerate(queue):
                if queued.qos == 0:
                    del queue[index]
                    self.queued_qos0 -= 1
                    break
        queue.append(delivery)
        if delivery.qos == 0:
            self.queued_qos0 += 1
        return True

    def dequeue(self) -> Delivery:
        delivery = self.queue.popleft()
        if delivery.qos == 0:
            self.queued_qos0 -= 1
        return delivery

    def clear_messages(self) -> None:
        """Forget every queued and inflight delivery (the session starts anew)."""
        self.queue.clear()
        self.queued_qos0 = 0
        self.inflight.clear()
        self.inbound_qos2.clear()
