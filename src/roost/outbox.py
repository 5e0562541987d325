"""Outbound delivery of one connection: what is sent now and what waits in the session's
queue, the client's receive window, resending on resume, and server-side topic aliases.

Order is kept for every QoS: a delivery is sent at once only when nothing is queued ahead
of it, the transport is not congested and (QoS 1/2) the client's Receive Maximum allows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

from roost.codec import MQTT_5, Properties, PubRel, encode, encode_properties, encode_publish
from roost.codec.primitives import encode_u16
from roost.message import Message
from roost.session import Delivery, OutboundState, Session
from roost.stats import TrafficCounters

TOPIC_ALIAS_PROPERTY = b"\x23"  # property identifier of Topic Alias [MQTT 3.3.2.3.4]
MIN_ALIASED_TOPIC = 3  # shorter topics are cheaper sent whole than aliased (2 bytes + id)


class TopicAliases:
    """Aliases the server assigns to topics it sends one MQTT 5 client [MQTT-3.3.2.3.4].

    Policy: a topic of at least ``MIN_ALIASED_TOPIC`` bytes gets an alias on its first
    send while fewer than the client's Topic Alias Maximum are in use; after that, the
    least recently sent topic's alias is given to the new topic (an LRU). The first PUBLISH
    under an alias carries the topic and the alias (setting it), later ones an empty topic
    and the alias. Aliases belong to one network connection: a new connection starts with
    none [MQTT-3.3.2-7].
    """

    __slots__ = ("_by_topic", "_free", "_maximum", "_next")

    def __init__(self, maximum: int) -> None:
        self._maximum = maximum
        self._by_topic: OrderedDict[bytes, int] = OrderedDict()
        self._next = 1  # the lowest alias never handed out
        self._free: list[int] = []  # aliases taken back before the client learnt them

    def lookup(self, topic: bytes) -> tuple[bytes, int]:
        """(topic to send, alias; 0 for none): the topic is empty when the client knows
        the alias already."""
        by_topic = self._by_topic
        alias = by_topic.get(topic)
        if alias is not None:
            by_topic.move_to_end(topic)
            return b"", alias
        if len(topic) < MIN_ALIASED_TOPIC:
            return topic, 0
        if self._free:
            alias = self._free.pop()
        elif self._next <= self._maximum:
            alias = self._next
            self._next += 1
        else:
            _, alias = by_topic.popitem(last=False)
        by_topic[topic] = alias
        return topic, alias

    def forget(self, topic: bytes) -> None:
        """The PUBLISH that was to set ``topic``'s alias is not sent: the client never
        learns it, so the alias must not be used for it."""
        alias = self._by_topic.pop(topic, None)
        if alias is not None:
            self._free.append(alias)


class Outbox:
    """Sends deliveries of one session over one connection (sans I/O: ``write`` is the
    transport's, ``now`` the broker's clock)."""

    __slots__ = (
        "_aliases",
        "_clock",
        "_holds",
        "_on_drop",
        "_traffic",
        "_writes_paused",
        "congested",
        "level",
        "max_packet",
        "max_queued",
        "send_window",
        "session",
        "write",
    )

    def __init__(
        self,
        session: Session,
        write: Callable[[bytes], None],
        clock: Callable[[], float],
        on_drop: Callable[[str], None],
        traffic: TrafficCounters,
        *,
        level: int,
        send_window: int,
        max_packet: int,
        max_queued: int,
        topic_alias_maximum: int,
    ) -> None:
        self.session = session
        self.write = write
        self._clock = clock
        self._on_drop = on_drop  # called with the client id when the queue drops a message
        self._traffic = traffic  # counts what is sent and what is dropped here
        self.level = level
        self.send_window = send_window
        self.max_packet = max_packet
        self.max_queued = max_queued
        self._holds = 0  # acknowledgements (CONNACK, SUBACK) that deliveries wait behind
        self._writes_paused = False  # the transport asked us to stop writing for now
        self.congested = False  # either of the two: deliveries are queued, not sent
        self._aliases = (
            TopicAliases(topic_alias_maximum) if topic_alias_maximum and level == MQTT_5 else None
        )

    def hold(self) -> None:
        """Queue deliveries until :meth:`release`: an acknowledgement that must come
        first is waiting for the store."""
        self._holds += 1
        self.congested = True

    def release(self) -> None:
        self._holds -= 1
        self._update()

    def writes_paused(self, paused: bool) -> None:
        """The transport's buffer is full (True) or has room again (False)."""
        self._writes_paused = paused
        self._update()

    def _update(self) -> None:
        self.congested = self._writes_paused or self._holds > 0
        if not self.congested:
            self.pump()

    def deliver(self, delivery: Delivery) -> None:
        """Send a message now, or queue it behind earlier ones (order is kept for all QoS)."""
        session = self.session
        if (
            session.queue
            or self.congested
            or (delivery.qos and len(session.inflight) >= self.send_window)
        ):
            if not session.enqueue(delivery, self.max_queued, self._clock()):
                self._on_drop(session.client_id)
            return
        self._send(delivery)

    def send_plain(self, message: Message, retain: bool) -> bool:
        """The fast way of ``deliver`` for the commonest delivery, QoS 0 without
        subscription identifiers: sent at once, without a ``Delivery``, when nothing is
        queued, the transport takes it, no alias or expiry applies and it fits; False,
        with nothing done, otherwise."""
        if (
            self.congested
            or self.session.queue
            or self._aliases is not None
            or message.expires_at is not None
        ):
            return False
        data = message.encode_qos0(self.level, retain, 0.0)
        if len(data) > self.max_packet:
            return False
        self.write(data)
        traffic = self._traffic
        traffic.messages_out[0] += 1
        traffic.payload_bytes_out[0] += len(message.payload)
        return True

    def pump(self) -> None:
        """Send queued messages while the client's receive window allows [MQTT-4.9]."""
        session = self.session
        queue = session.queue
        while queue and not self.congested:
            if queue[0].qos and len(session.inflight) >= self.send_window:
                return
            self._send(session.dequeue())
            queue = session.queue

    def _send(self, delivery: Delivery) -> None:
        session = self.session
        message = delivery.message
        traffic = self._traffic
        now = 0.0  # only read for messages that expire
        if message.expires_at is not None:
            now = self._clock()
            if now >= message.expires_at:
                traffic.dropped_expired += 1
                session.discard(delivery)
                return  # [MQTT-3.3.2-5]
        qos = delivery.qos
        if qos == 0 and not delivery.subscription_ids and self._aliases is None:
            data = message.encode_qos0(self.level, delivery.retain, now)
            if len(data) > self.max_packet:
                traffic.dropped_too_large += 1
                return
        else:
            packet_id = session.allocate_packet_id() if qos else 0
            data = self._encode(delivery, packet_id, False, now)
            if len(data) > self.max_packet:
                traffic.dropped_too_large += 1
                session.discard(delivery)
                return  # too big for this client: dropped as if delivered [MQTT-3.1.2-25]
            if qos:
                session.send(delivery, packet_id)
        self.write(data)
        traffic.messages_out[qos] += 1
        traffic.payload_bytes_out[qos] += len(message.payload)

    def _encode(self, delivery: Delivery, packet_id: int, dup: bool, now: float) -> bytes:
        message = delivery.message
        topic = message.topic_bytes
        properties = None
        alias = 0
        if self.level == MQTT_5:
            properties = message.properties_bytes(now)
            if delivery.subscription_ids:
                ids = Properties(subscription_identifiers=delivery.subscription_ids)
                properties = encode_properties(ids) + properties
            if self._aliases is not None:
                topic, alias = self._aliases.lookup(topic)
                if alias:
                    properties = TOPIC_ALIAS_PROPERTY + encode_u16(alias) + properties
        data = encode_publish(
            topic,
            message.payload,
            delivery.qos,
            delivery.retain,
            dup,
            packet_id,
            properties,
            self.level,
        )
        if alias and topic and len(data) > self.max_packet and self._aliases is not None:
            self._aliases.forget(topic)  # not sent: the client does not learn this alias
        return data

    def resend_inflight(self) -> None:
        """On session resume, re-send unacknowledged PUBLISH (DUP set) and PUBREL
        [MQTT-4.4.0-1], within what the client accepts now: PUBLISHes beyond its Receive
        Maximum go back to the queue [MQTT-3.3.4-9]; one larger than its Maximum Packet
        Size is dropped as if delivered [MQTT-3.1.2-25]."""
        session = self.session
        now = self._clock()
        sent = 0
        too_big: list[tuple[int, OutboundState]] = []
        held_back: list[int] = []
        for packet_id, inflight in session.inflight.items():
            if inflight.state is OutboundState.AWAITING_PUBCOMP:
                self.write(encode(PubRel(packet_id), self.level))
                sent += 1
                continue
            if sent >= self.send_window:
                held_back.append(packet_id)
                continue
            data = self._encode(inflight.delivery, packet_id, True, now)
            if len(data) > self.max_packet:
                too_big.append((packet_id, inflight.state))
                continue
            self.write(data)
            sent += 1
        self._traffic.dropped_too_large += len(too_big)
        for packet_id, state in too_big:
            session.complete(packet_id, state)
        if held_back:
            session.unsend(held_back)

    def complete(self, packet_id: int, expected: OutboundState) -> None:
        """The client finished an outbound flow; its place in the window is free."""
        if self.session.complete(packet_id, expected):
            self.pump()
