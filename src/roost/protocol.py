"""One client connection, sans I/O: bytes in, packets handled in arrival order, bytes out.

The asyncio shell gives each connection a :class:`Transport` (write bytes, close) and feeds
it ``data_received`` / ``connection_lost``. Every ProtocolError ends up in one place,
:meth:`ClientProtocol._violation`, which answers with the right CONNACK or DISCONNECT
reason code, logs one line and closes this connection only.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable
from enum import Enum
from functools import partial
from typing import Any, Protocol

from roost.codec import (
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Framer,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    UnsubAck,
    Unsubscribe,
    UnsupportedProtocolVersion,
    Will,
    encode,
    encode_properties,
    encode_publish,
)
from roost.core import BrokerCore
from roost.errors import ConnackV3, ProtocolError, ReasonCode
from roost.message import Message
from roost.session import NEVER_EXPIRES, Delivery, OutboundState, Session
from roost.session import SubscriptionOptions as Options
from roost.topics import is_wildcard, parse_shared, validate_topic_filter, validate_topic_name
from roost.transactions import TOPIC_PREFIX as TRANSACTION_TOPICS
from roost.transactions import TransactionRefused, transaction_fields

log = logging.getLogger("roost.protocol")

CONNECT_TIMEOUT = 10.0  # seconds a new connection has to send CONNECT
MAX_PACKET_SIZE = 268_435_460  # the largest packet MQTT can express
STRICT_CLIENT_ID = re.compile(r"[0-9a-zA-Z]{1,23}")  # [MQTT-3.1.3-5]

_V3_REFUSALS = {  # MQTT 5 CONNACK reason -> the MQTT 3.1.1 return code closest to it
    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID: ConnackV3.IDENTIFIER_REJECTED,
    ReasonCode.UNSUPPORTED_PROTOCOL_VERSION: ConnackV3.UNACCEPTABLE_PROTOCOL_VERSION,
    ReasonCode.BAD_USER_NAME_OR_PASSWORD: ConnackV3.BAD_USER_NAME_OR_PASSWORD,
    ReasonCode.NOT_AUTHORIZED: ConnackV3.NOT_AUTHORIZED,
}


class Transport(Protocol):
    """What the I/O shell provides to a connection."""

    peer: str

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class State(Enum):
    AWAITING_CONNECT = 1
    CONNECTED = 2
    CLOSED = 3


class ConnectRefused(ProtocolError):
    """CONNECT is well formed but refused: answered with CONNACK, not DISCONNECT."""


class ClientProtocol:
    """The MQTT state of one network connection, bound to a session once CONNECTed."""

    __slots__ = (
        "client_id",
        "congested",
        "core",
        "framer",
        "handlers",
        "inbound_aliases",
        "keep_alive",
        "keepalive_due",
        "last_received",
        "level",
        "max_outgoing_packet",
        "opened_at",
        "problem_information",
        "send_window",
        "session",
        "session_expiry",
        "settings",
        "state",
        "transport",
        "will",
    )

    def __init__(self, core: BrokerCore, transport: Transport) -> None:
        self.core = core
        self.settings = core.settings
        self.transport = transport
        self.framer = Framer(self.settings.max_packet_size)
        self.state = State.AWAITING_CONNECT
        self.handlers = _HANDLERS[State.AWAITING_CONNECT]  # the packets legal in this state
        self.level = 4
        self.client_id = ""
        self.session: Session | None = None
        self.session_expiry = 0
        self.keep_alive = 0
        self.last_received = self.opened_at = core.clock()
        self.will: Will | None = None
        self.send_window = self.settings.max_inflight
        self.max_outgoing_packet = MAX_PACKET_SIZE
        self.inbound_aliases: dict[int, str] | None = None  # made on first use
        self.congested = False  # the transport asked us to stop writing for now
        self.problem_information = True  # MQTT 5 Request Problem Information
        core.open_connections.add(self)
        self.keepalive_due = 0.0  # when its live keep-alive wheel entry comes due
        core.watch_keepalive(self, self.opened_at + CONNECT_TIMEOUT)

    # -- input ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Handle every complete packet in ``data``, in order."""
        if self.state is State.CLOSED:
            return
        self.last_received = self.core.clock()
        framer = self.framer
        framer.feed(data)
        try:
            for packet in framer:
                handler = self.handlers.get(type(packet))
                if handler is None:
                    raise ProtocolError(f"{type(packet).__name__} not allowed here")
                handler(self, packet)
                if self.handlers is _NO_HANDLERS:
                    return  # closed while handling the packet
        except ProtocolError as exc:
            self._violation(exc)
        except Exception:
            log.exception("internal error handling a packet from %s; closing it", self._name())
            self._close_with(ReasonCode.UNSPECIFIED_ERROR, "internal error", publish_will=True)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def connection_lost(self) -> None:
        """The network connection ended; unless the client sent DISCONNECT, its will goes out."""
        self._finish(publish_will=True)

    # -- timers and server-initiated closes ---------------------------------------------

    def keepalive_deadline(self) -> float | None:
        """When this connection is due to be closed if nothing more arrives (None: never)."""
        if self.state is State.AWAITING_CONNECT:
            return self.opened_at + CONNECT_TIMEOUT  # a trickled CONNECT does not extend it
        if self.state is State.CLOSED or self.keep_alive == 0:
            return None
        return self.last_received + 1.5 * self.keep_alive  # [MQTT-3.1.2-22]

    def keepalive_expired(self) -> None:
        log.info("closing %s: keep alive %d s exceeded", self._name(), self.keep_alive)
        self._close_with(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout", publish_will=True)

    def take_over(self) -> None:
        """Another connection took this client id [MQTT-3.1.4-3]."""
        log.info("closing %s: session taken over", self._name())
        self._close_with(ReasonCode.SESSION_TAKEN_OVER, "session taken over", publish_will=True)

    def server_shutdown(self) -> None:
        """The server closes the connection without the client's DISCONNECT, so the will
        goes out (or, with a delay, is kept with the session) [MQTT-3.1.2-8]."""
        self._close_with(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down", True)

    def _close_with(self, reason: ReasonCode, text: str, publish_will: bool) -> None:
        if self.state is State.CONNECTED and self.level == MQTT_5:
            self._send(Disconnect(reason, Properties(reason_string=text)))
        self._finish(publish_will)
        self.transport.close()

    def _finish(self, publish_will: bool) -> None:
        """Detach from the session once; idempotent."""
        if self.state is State.CLOSED:
            return
        was_connected = self.state is State.CONNECTED
        self.state = State.CLOSED
        self.handlers = _HANDLERS[State.CLOSED]
        self.core.open_connections.discard(self)
        if was_connected:
            self.core.connection_closed(self, self.will if publish_will else None)

    def _violation(self, exc: ProtocolError) -> None:
        """The one place a protocol error becomes a CONNACK or DISCONNECT and a close."""
        code = exc.reason_code
        log.info("closing %s: %s (reason 0x%02X)", self._name(), exc, code)
        if self.state is State.AWAITING_CONNECT:
            # CONNACK carries the refusal for MQTT 5, and for 3.1.1 where it has a code.
            if isinstance(exc, UnsupportedProtocolVersion):
                self._refuse(code, exc.protocol_level)
            elif self.level == MQTT_5 or isinstance(exc, ConnectRefused):
                self._refuse(code, self.level)
            self._finish(publish_will=False)
            self.transport.close()
        else:
            self._close_with(code, str(exc), publish_will=True)

    def _refuse(self, code: ReasonCode, level: int) -> None:
        if level >= MQTT_5:  # an unknown newer level gets the MQTT 5 form
            self.transport.write(encode(ConnAck(False, code), MQTT_5))
        else:
            v3_code = _V3_REFUSALS.get(code, ConnackV3.SERVER_UNAVAILABLE)
            self.transport.write(encode(ConnAck(False, v3_code), level))

    # -- output ---------------------------------------------------------------------------

    def _send(self, packet: Packet) -> None:
        self.transport.write(encode(packet, self.level))

    def _send_when_durable(self, packet: Packet) -> None:
        """Send an acknowledgement once the state it confirms is on disk."""
        self.core.store.after_commit(partial(self.transport.write, encode(packet, self.level)))

    def deliver(self, delivery: Delivery) -> None:
        """Send a message now, or queue it behind earlier ones (order is kept for all QoS)."""
        session = self.session
        assert session is not None
        if (
            session.queue
            or self.congested
            or (delivery.qos and len(session.inflight) >= self.send_window)
        ):
            limit = self.settings.max_queued_messages
            if not session.enqueue(delivery, limit, self.core.clock()):
                self.core.dropped_messages += 1
            return
        self._send_delivery(session, delivery)

    def writing_paused(self) -> None:
        """The transport's buffer is full: queue deliveries (bounded, see Session.enqueue)
        instead of buffering without limit for a slow client."""
        self.congested = True

    def writing_resumed(self) -> None:
        self.congested = False
        if self.state is State.CONNECTED:
            self._pump()

    def _pump(self) -> None:
        """Send queued messages while the client's receive window allows [MQTT-4.9]."""
        session = self.session
        assert session is not None
        queue = session.queue
        while queue and self.state is State.CONNECTED and not self.congested:
            if queue[0].qos and len(session.inflight) >= self.send_window:
                return
            self._send_delivery(session, session.dequeue())

    def _send_delivery(self, session: Session, delivery: Delivery) -> None:
        message = delivery.message
        now = 0.0  # only read for messages that expire
        if message.expires_at is not None:
            now = self.core.clock()
            if now >= message.expires_at:
                session.discard(delivery)
                return  # [MQTT-3.3.2-5]
        if delivery.qos == 0 and not delivery.subscription_ids:
            data = message.encode_qos0(self.level, delivery.retain, now)
            if len(data) <= self.max_outgoing_packet:
                self.transport.write(data)
            return
        packet_id = session.allocate_packet_id() if delivery.qos else 0
        data = self._encode_publish(delivery, packet_id, False, now)
        if len(data) > self.max_outgoing_packet:
            session.discard(delivery)
            return  # too big for this client: dropped as if delivered [MQTT-3.1.2-25]
        if delivery.qos:
            session.send(delivery, packet_id)
        self.transport.write(data)

    def _encode_publish(self, delivery: Delivery, packet_id: int, dup: bool, now: float) -> bytes:
        message = delivery.message
        properties = None
        if self.level == MQTT_5:
            properties = message.properties_bytes(now)
            if delivery.subscription_ids:
                ids = Properties(subscription_identifiers=delivery.subscription_ids)
                properties = encode_properties(ids) + properties
        return encode_publish(
            message.topic_bytes,
            message.payload,
            delivery.qos,
            delivery.retain,
            dup,
            packet_id,
            properties,
            self.level,
        )

    def _resend_inflight(self, session: Session) -> None:
        """On session resume, re-send unacknowledged PUBLISH (DUP set) and PUBREL
        [MQTT-4.4.0-1], within what the client accepts now: PUBLISHes beyond its Receive
        Maximum go back to the queue [MQTT-3.3.4-9]; one larger than its Maximum Packet
        Size is dropped as if delivered [MQTT-3.1.2-25]."""
        now = self.core.clock()
        sent = 0
        too_big: list[tuple[int, OutboundState]] = []
        held_back: list[int] = []
        for packet_id, inflight in session.inflight.items():
            if inflight.state is OutboundState.AWAITING_PUBCOMP:
                self._send(PubRel(packet_id))
                sent += 1
                continue
            if sent >= self.send_window:
                held_back.append(packet_id)
                continue
            data = self._encode_publish(inflight.delivery, packet_id, True, now)
            if len(data) > self.max_outgoing_packet:
                too_big.append((packet_id, inflight.state))
                continue
            self.transport.write(data)
            sent += 1
        for packet_id, state in too_big:
            session.complete(packet_id, state)
        if held_back:
            session.unsend(held_back)

    # -- packet handlers ------------------------------------------------------------------

    def _on_second_connect(self, packet: Connect) -> None:
        raise ProtocolError("second CONNECT on one connection")  # [MQTT-3.1.0-2]

    def _on_connect(self, packet: Connect) -> None:
        settings = self.settings
        core = self.core
        self.level = level = packet.protocol_level
        v5 = level == MQTT_5
        props = packet.properties
        client_id = packet.client_id
        if len(core.open_connections) > settings.max_connections:
            raise ConnectRefused("too many connections", ReasonCode.QUOTA_EXCEEDED)
        if v5 and props.authentication_method is not None:
            raise ConnectRefused(
                "enhanced authentication is not supported", ReasonCode.BAD_AUTHENTICATION_METHOD
            )
        assigned = None
        if not client_id:
            if not settings.allow_empty_client_id or not (v5 or packet.clean_start):
                raise ConnectRefused(
                    "empty client id not allowed", ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
                )  # [MQTT-3.1.3-8]
            client_id = assigned = "roost-" + secrets.token_hex(8)
        elif settings.strict_client_id and not STRICT_CLIENT_ID.fullmatch(client_id):
            raise ConnectRefused(
                f"client id {client_id!r} is not 1-23 characters of 0-9a-zA-Z",
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
            )
        self.client_id = client_id
        keep_alive = packet.keep_alive
        server_keep_alive = None
        if keep_alive > settings.max_keep_alive or (keep_alive == 0 and settings.max_keep_alive):
            if not v5:
                if keep_alive > settings.max_keep_alive:
                    raise ConnectRefused(
                        f"keep alive {keep_alive} s above the maximum",
                        ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                    )
            elif settings.max_keep_alive < 65535:
                keep_alive = server_keep_alive = settings.max_keep_alive
        will = packet.will
        if will is not None:
            validate_topic_name(will.topic, settings.max_topic_length, settings.max_topic_levels)
            if will.qos > settings.maximum_qos:
                raise ConnectRefused("will QoS not supported", ReasonCode.QOS_NOT_SUPPORTED)
            if will.retain and not settings.retain_available:
                raise ConnectRefused("retain not supported", ReasonCode.RETAIN_NOT_SUPPORTED)
        if v5:
            expiry = props.session_expiry_interval or 0
            self.send_window = min(props.receive_maximum or 65535, settings.max_inflight)
            self.max_outgoing_packet = props.maximum_packet_size or MAX_PACKET_SIZE
            self.problem_information = props.request_problem_information != 0
        else:
            expiry = 0 if packet.clean_start else NEVER_EXPIRES
        granted_expiry = min(expiry, settings.max_session_expiry)
        self.session_expiry = granted_expiry
        self.keep_alive = keep_alive
        self.will = will
        session, present = core.open_session(
            self, client_id, packet.clean_start, granted_expiry, will
        )
        self.session = session
        self.state = State.CONNECTED
        self.handlers = _HANDLERS[State.CONNECTED]
        if v5:
            ack_props = Properties(
                session_expiry_interval=granted_expiry if granted_expiry != expiry else None,
                receive_maximum=settings.receive_maximum,
                maximum_qos=settings.maximum_qos if settings.maximum_qos < 2 else None,
                retain_available=int(settings.retain_available),
                maximum_packet_size=settings.max_packet_size,
                assigned_client_identifier=assigned,
                topic_alias_maximum=settings.topic_alias_maximum,
                wildcard_subscription_available=int(settings.wildcard_subscription_available),
                subscription_identifier_available=int(settings.subscription_identifier_available),
                shared_subscription_available=int(settings.shared_subscription_available),
                server_keep_alive=server_keep_alive,
            )
            self._send(ConnAck(present, ReasonCode.SUCCESS, ack_props))
        else:
            self._send(ConnAck(present, ConnackV3.ACCEPTED))
        if keep_alive:
            core.watch_keepalive(self, self.last_received + 1.5 * keep_alive)
        self._resend_inflight(session)
        self._pump()

    def _on_publish(self, packet: Publish) -> None:
        settings = self.settings
        session = self.session
        assert session is not None
        topic = packet.topic
        alias = packet.properties.topic_alias
        if alias is not None:
            if not 0 < alias <= settings.topic_alias_maximum:
                raise ProtocolError(
                    f"topic alias {alias} outside 1..{settings.topic_alias_maximum}",
                    ReasonCode.TOPIC_ALIAS_INVALID,
                )  # [MQTT-3.3.2-8, -9]
            aliases = self.inbound_aliases
            if aliases is None:
                aliases = self.inbound_aliases = {}
            if topic:
                aliases[alias] = topic
            else:
                known = aliases.get(alias)
                if known is None:
                    raise ProtocolError(f"topic alias {alias} is not set")
                topic = known
        elif not topic:
            raise ProtocolError("PUBLISH without topic name or topic alias")
        self.core.valid_topics.check(topic)
        qos = packet.qos
        if qos > settings.maximum_qos:
            raise ProtocolError(f"QoS {qos} not supported", ReasonCode.QOS_NOT_SUPPORTED)
        if packet.retain and not settings.retain_available:
            raise ProtocolError("retain not supported", ReasonCode.RETAIN_NOT_SUPPORTED)
        if qos == 2:
            inbound = session.inbound_qos2
            if packet.packet_id in inbound:
                self._send_when_durable(PubRec(packet.packet_id))  # a resend: route it once
                return
            if len(inbound) >= settings.receive_maximum:
                raise ProtocolError(
                    "more unacknowledged QoS 2 messages than Receive Maximum",
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                )  # [MQTT-3.3.4-9]
        message = Message(
            topic,
            packet.payload,
            qos,
            packet.retain,
            packet.properties,
            session.client_id,
            self.last_received,
            packet.frame if alias is None else b"",  # an alias is this connection's own
            self.level,
        )
        code, ack_properties = self._accept(message)
        if qos == 0:
            return
        if not self.problem_information:
            ack_properties = NO_PROPERTIES  # [MQTT-3.1.2-29]
        if qos == 1:
            self._send_when_durable(PubAck(packet.packet_id, code, ack_properties))
        else:
            if code < 0x80:
                session.receive_qos2(packet.packet_id)
            self._send_when_durable(PubRec(packet.packet_id, code, ack_properties))

    def _accept(self, message: Message) -> tuple[ReasonCode, Properties]:
        """Publish a message, or take it as a transaction's half message or decision;
        returns the reason code (and properties) for PUBACK / PUBREC."""
        core = self.core
        try:
            if message.topic.startswith(TRANSACTION_TOPICS):
                core.decide_transaction(message.topic, message.payload)
                return ReasonCode.SUCCESS, NO_PROPERTIES
            half = transaction_fields(message.properties)
            if half is not None:
                core.prepare_transaction(*half, message)
                return ReasonCode.SUCCESS, NO_PROPERTIES
        except TransactionRefused as exc:
            log.info("%s: %s", self._name(), exc)
            return exc.reason_code, Properties(reason_string=str(exc))
        if core.publish(message):
            return ReasonCode.SUCCESS, NO_PROPERTIES
        return ReasonCode.NO_MATCHING_SUBSCRIBERS, NO_PROPERTIES

    def _on_puback(self, packet: PubAck) -> None:
        self._complete(packet.packet_id, OutboundState.AWAITING_PUBACK)

    def _on_pubcomp(self, packet: PubComp) -> None:
        self._complete(packet.packet_id, OutboundState.AWAITING_PUBCOMP)

    def _complete(self, packet_id: int, expected: OutboundState) -> None:
        session = self.session
        assert session is not None
        if session.complete(packet_id, expected):
            self._pump()

    def _on_pubrec(self, packet: PubRec) -> None:
        session = self.session
        assert session is not None
        inflight = session.inflight.get(packet.packet_id)
        if inflight is None or inflight.state is OutboundState.AWAITING_PUBACK:
            self._send(PubRel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            return
        if inflight.state is OutboundState.AWAITING_PUBREC:
            if packet.reason_code >= 0x80:
                self._complete(packet.packet_id, inflight.state)  # the flow ends [MQTT-4.3.3]
                return
            session.released(packet.packet_id)
        self._send_when_durable(PubRel(packet.packet_id))

    def _on_pubrel(self, packet: PubRel) -> None:
        session = self.session
        assert session is not None
        if session.release_qos2(packet.packet_id):
            self._send_when_durable(PubComp(packet.packet_id))
        else:
            self._send(PubComp(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))

    def _on_subscribe(self, packet: Subscribe) -> None:
        settings = self.settings
        session = self.session
        assert session is not None
        v5 = self.level == MQTT_5
        ids = packet.properties.subscription_identifiers
        identifier = ids[0] if ids else None
        if identifier is not None and not settings.subscription_identifier_available:
            raise ProtocolError(
                "subscription identifiers are not supported",
                ReasonCode.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
            )
        codes: list[int] = []
        retained: list[tuple[Message, int]] = []
        now = self.core.clock()
        for sub in packet.subscriptions:
            topic_filter = sub.topic_filter
            code = self._check_filter(topic_filter, sub.no_local)
            if code is not None:
                codes.append(code if v5 else 0x80)
                continue
            qos = min(sub.qos, settings.maximum_qos)
            options = Options(
                qos, sub.no_local, sub.retain_as_published, sub.retain_handling, identifier
            )
            is_new = self.core.router.subscribe(session.client_id, topic_filter, options)
            session.subscribe(topic_filter, options)
            codes.append(qos)
            handling = sub.retain_handling
            shared = topic_filter.startswith("$share/")  # no retained for shared [MQTT-3.8.4]
            if not shared and (handling == 0 or (handling == 1 and is_new)):
                for message in self.core.router.retained_for(topic_filter, now):
                    retained.append((message, qos))
        self._send(SubAck(packet.packet_id, tuple(codes)))
        sub_ids = () if identifier is None else (identifier,)
        for message, qos in retained:
            granted = min(message.qos, qos)
            self.deliver(Delivery(message, granted, True, sub_ids))  # [MQTT-3.3.1-8]

    def _check_filter(self, topic_filter: str, no_local: bool) -> int | None:
        """The SUBACK failure code for a filter, or None if it can be subscribed."""
        settings = self.settings
        try:
            validate_topic_filter(
                topic_filter, settings.max_topic_length, settings.max_topic_levels
            )
        except ProtocolError as exc:
            return exc.reason_code
        group, inner = parse_shared(topic_filter)
        if group is not None:
            if not settings.shared_subscription_available:
                return ReasonCode.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
            if no_local:
                raise ProtocolError("no local on a shared subscription")  # [MQTT-3.8.3-4]
        if not settings.wildcard_subscription_available and is_wildcard(inner):
            return ReasonCode.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        return None

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        codes: list[int] = []
        for topic_filter in packet.topic_filters:
            existed = self.core.router.unsubscribe(session.client_id, topic_filter)
            session.unsubscribe(topic_filter)
            codes.append(ReasonCode.SUCCESS if existed else ReasonCode.NO_SUBSCRIPTION_EXISTED)
        self._send(UnsubAck(packet.packet_id, tuple(codes)))

    def _on_pingreq(self, packet: PingReq) -> None:
        self._send(PingResp())

    def _on_disconnect(self, packet: Disconnect) -> None:
        expiry = packet.properties.session_expiry_interval
        if expiry is not None:
            if self.session_expiry == 0 and expiry != 0:
                raise ProtocolError("session expiry set at DISCONNECT after 0 at CONNECT")
            self.session_expiry = min(expiry, self.settings.max_session_expiry)
            assert self.session is not None
            self.session.set_expiry_interval(self.session_expiry, self.core.store)
        publish_will = packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL
        self._finish(publish_will)  # a normal DISCONNECT discards the will [MQTT-3.14.4-3]
        self.transport.close()

    def _on_auth(self, packet: Auth) -> None:
        raise ProtocolError(
            "enhanced authentication is not supported", ReasonCode.BAD_AUTHENTICATION_METHOD
        )

    def _name(self) -> str:
        return f"client {self.client_id or '?'} ({self.transport.peer})"


_Handler = Callable[[ClientProtocol, Any], None]

# Which packet is legal in which state, and who handles it. Before CONNECT only CONNECT is
# accepted [MQTT-3.1.0-1]; server-to-client packets are never accepted from a client.
_NO_HANDLERS: dict[type, _Handler] = {}
_HANDLERS: dict[State, dict[type, _Handler]] = {State.CLOSED: _NO_HANDLERS}
_HANDLERS[State.AWAITING_CONNECT] = {Connect: ClientProtocol._on_connect}
_HANDLERS[State.CONNECTED] = {
    Connect: ClientProtocol._on_second_connect,
    Publish: ClientProtocol._on_publish,
    PubAck: ClientProtocol._on_puback,
    PubRec: ClientProtocol._on_pubrec,
    PubRel: ClientProtocol._on_pubrel,
    PubComp: ClientProtocol._on_pubcomp,
    Subscribe: ClientProtocol._on_subscribe,
    Unsubscribe: ClientProtocol._on_unsubscribe,
    PingReq: ClientProtocol._on_pingreq,
    Disconnect: ClientProtocol._on_disconnect,
    Auth: ClientProtocol._on_auth,
}
