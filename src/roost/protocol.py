"""One server-side MQTT connection, sans I/O: bytes in, packets handled in arrival order,
bytes out.

The I/O shell gives each connection a :class:`Transport` and feeds it ``data_received`` /
``connection_lost``. The connection owns protocol state and flow only: which packet may
come next, negotiation, inbound acknowledgements and receive maximum, reading paused and
resumed. Broker policy (sessions, subscriptions, routing, transactions) is the core's;
outbound delivery is the :class:`~roost.outbox.Outbox`'s.

After a valid CONNECT the connection is CONNECTING: it hands itself to an *attach* step
(authentication, taking the session over, loading it), which ends with
:meth:`ServerConnection.complete_connect` or :meth:`ServerConnection.refuse_connect`,
possibly on a later loop turn. Packets the client sent right behind its CONNECT stay in
the framer (reading pauses once ATTACH_INPUT_LIMIT bytes wait) and are handled after
CONNACK, in order. An MQTT 5 enhanced authentication (section 4.12) exchanges AUTH packets
meanwhile: the attach sends a challenge and the connection reads the client's AUTH alone.

Every ProtocolError ends up in one place, :meth:`ServerConnection._violation`, which
answers with the right CONNACK or DISCONNECT reason code, logs one line and closes this
connection only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from functools import partial
from typing import Any, Protocol

from roost.codec import (
    MQTT_5,
    NO_PROPERTIES,
    PROTOCOL_VERSIONS,
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
    Will,
    encode,
)
from roost.core import BrokerCore
from roost.errors import (
    ConnackV3,
    ConnectRefused,
    ProtocolError,
    ReasonCode,
    TransactionRefused,
    UnsupportedProtocolVersion,
)
from roost.message import Message
from roost.negotiation import MAX_PACKET_SIZE, ConnectTerms, negotiate
from roost.outbox import Outbox
from roost.seldom import Seldom
from roost.session import Delivery, OutboundState, Session
from roost.timers import Linked
from roost.transactions import TOPIC_PREFIX as TRANSACTION_TOPICS
from roost.transactions import transaction_fields

log = logging.getLogger("roost.protocol")

CONNECT_TIMEOUT = 10.0  # seconds a new connection has to be attached (CONNECT and attach)
PACKET_BUDGET = 256  # packets handled per loop turn before other connections get theirs
# Deliveries one connection's input may cause per loop turn. Writes are flushed once per
# turn, so a publisher with many subscribers would otherwise hand each of them a turn's
# worth at once, one turn apart (256 publishes x 100 subscribers: ~17 ms of work between
# two writes to a subscriber). Measured in qos0-fanout (bench/README.md, "Where Roost's
# fan-out gaps came from"): 4096 gives shorter gaps than 8192 at the same throughput;
# 2048 gives no shorter ones and loses 13% of it to write calls.
DELIVERY_BUDGET = 4096
PUBACK_SUCCESS = b"\x40\x02"  # fixed header of a PUBACK with success and no properties
ATTACH_INPUT_LIMIT = 65_536  # bytes buffered behind CONNECT before reading pauses
MAX_REASON_BYTES = 65_535  # a UTF-8 string's limit [MQTT-1.5.4]

# Why reading from a connection is paused; it reads only while none applies.
WAITING_FOR_ATTACH = 1
OVER_BUDGET = 2
WRITES_BACKED_UP = 4
STORE_BACKLOGGED = 8
RATE_LIMITED = 16  # over its message or byte rate, until the sweep finds it refilled

_V3_REFUSALS = {  # MQTT 5 CONNACK reason -> the MQTT 3.1.1 return code closest to it
    ReasonCode.CLIENT_IDENTIFIER_NOT_VALID: ConnackV3.IDENTIFIER_REJECTED,
    ReasonCode.UNSUPPORTED_PROTOCOL_VERSION: ConnackV3.UNACCEPTABLE_PROTOCOL_VERSION,
    ReasonCode.BAD_USER_NAME_OR_PASSWORD: ConnackV3.BAD_USER_NAME_OR_PASSWORD,
    ReasonCode.NOT_AUTHORIZED: ConnackV3.NOT_AUTHORIZED,
}


class Transport(Protocol):
    """What the I/O shell provides to a connection."""

    @property
    def peer(self) -> str:
        """The client's "address:port" (worked out when asked: read it once per use)."""
        ...

    # The client's verified TLS certificate (see roost.transport.certificate), if any, and
    # the identity the listener vouches for (the certificate's CN on a
    # use_identity_as_username listener): the attach takes it as the user name.
    certificate: dict[str, object] | None
    identity: str | None

    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Flush, then close (the shell may linger to let the client read a DISCONNECT)."""
        ...

    def pause_reading(self, reason: int) -> None: ...

    def resume_reading(self, reason: int) -> None: ...

    def continue_later(self) -> None:
        """Call :meth:`ServerConnection.handle_input` again on a later loop turn."""
        ...

    def flush(self) -> None:
        """Send what was written so far now, not at the end of the loop turn."""
        ...

    def attach(self, connection: ServerConnection) -> None:
        """Run the listener's attach step for ``connection``, whose CONNECT was accepted:
        it ends with ``complete_connect`` or ``refuse_connect`` (see :data:`Attach`)."""
        ...


Attach = Callable[["ServerConnection"], None]


@dataclass(frozen=True, slots=True)
class AuthStep:
    """An enhanced authentication's answer to the client's Authentication Data: go on
    (CONTINUE_AUTHENTICATION, ``data`` for the client), done (SUCCESS, ``data`` for the
    client, ``identity`` the user it proved to be) or failed (a refusal code)."""

    reason: ReasonCode
    data: bytes | None = None
    identity: str | None = None


class AuthExchange(Protocol):
    """One enhanced authentication in progress (MQTT 5 section 4.12), sans I/O."""

    def step(self, data: bytes) -> AuthStep: ...


class EnhancedAuth(Protocol):
    """The enhanced authentication methods a server offers."""

    def start_exchange(self, method: str, peer: str) -> AuthExchange | None:
        """A new exchange of ``method`` for a client at ``peer``; None if not offered."""
        ...


_WithReason = PubAck | PubRec | PubRel | PubComp | SubAck | UnsubAck | Disconnect


class State(Enum):
    AWAITING_CONNECT = 1
    CONNECTING = 2  # CONNECT accepted, attach in progress, not reading
    CONNECTED = 3
    CLOSED = 4


class ServerConnection:
    """The MQTT state of one network connection, bound to a session once attached."""

    __slots__ = (
        "_in_input",
        "_seldom",
        "client_id",
        "core",
        "framer",
        "handlers",
        "inbound_aliases",
        "keep_alive",
        "last_received",
        "level",
        "max_outgoing_packet",
        "opened_at",
        "outbox",
        "problem_information",
        "qos1_awaiting_commit",
        "rate",
        "send_window",
        "session",
        "settings",
        "state",
        "terms",
        "throttled",
        "topic_alias_maximum",
        "transport",
        "username",
        "wheel_next",
        "wheel_prev",
        "will",
    )

    # Set by the attach when the client authenticated with an Authentication Method: it
    # serves the client's re-authentications [MQTT-4.12.1].
    enhanced_auth: Seldom[EnhancedAuth] = Seldom()
    _reauthentication: Seldom[AuthExchange] = Seldom()
    _auth_waiter: Seldom[Callable[[bytes | None], None]] = Seldom()  # see challenge()
    # Set by an attach that is waiting (e.g. for a password check): called if the
    # connection closes meanwhile, so that work for a client that is gone is dropped.
    attach_abort: Seldom[Callable[[], object]] = Seldom()

    def __init__(self, core: BrokerCore, transport: Transport) -> None:
        self.core = core
        self.settings = core.settings
        self.transport = transport
        self.framer = Framer(self.settings.max_packet_size)
        self.state = State.AWAITING_CONNECT
        self.handlers = _HANDLERS[State.AWAITING_CONNECT]  # the packets legal in this state
        self.level = 4
        self.client_id = ""
        # Who the client is for authorization and per-user limits: the CONNECT user name,
        # unless the attach establishes another identity (e.g. a TLS certificate's CN).
        self.username: str | None = None
        self._seldom: dict[str, object] | None = None  # the Seldom attributes above
        # The terms of its CONNECT, until CONNACK (kept after it for re-authentication only)
        self.terms: ConnectTerms | None = None
        self.session: Session | None = None
        # Made on first need (see _open_outbox): an idle connection has none.
        self.outbox: Outbox | None = None
        self.send_window = 0  # the client's Receive Maximum, for the outbox
        self.topic_alias_maximum = 0  # the client's, for the outbox
        self.keep_alive = 0
        self.last_received = self.opened_at = core.clock()
        self.will: Will | None = None
        self.max_outgoing_packet = MAX_PACKET_SIZE
        self.inbound_aliases: dict[int, str] | None = None  # made on first use
        self.problem_information = True  # MQTT 5 Request Problem Information
        self.qos1_awaiting_commit = 0  # inbound QoS 1 PUBLISHes not yet acknowledged
        self._in_input = False
        self.rate = core.limits.client_rate(self.opened_at)  # None: its rate is not limited
        self.throttled = False  # over its rate: nothing is handled until it refills
        self.wheel_prev: Linked | None = None  # its place in the keep-alive wheel
        self.wheel_next: Linked | None = None
        core.open_connections.add(self)
        core.watch_keepalive(self, self.opened_at + CONNECT_TIMEOUT)

    # -- input ----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Take bytes from the network and handle the packets they complete, in order."""
        if self.state is State.CLOSED:
            return
        self.last_received = self.core.clock()
        framer = self.framer
        framer.feed(data)
        if self.state is State.CONNECTING:
            # Kept for after CONNACK; reading goes on (so a client that leaves is noticed)
            # until the buffer holds ATTACH_INPUT_LIMIT bytes.
            if self._auth_waiter is not None:
                self._read_auth()
            elif framer.buffered >= ATTACH_INPUT_LIMIT:
                self.transport.pause_reading(WAITING_FOR_ATTACH)
            return
        self.handle_input()

    def handle_input(self) -> None:
        """Handle buffered packets, at most PACKET_BUDGET of them, and no more once they
        caused DELIVERY_BUDGET deliveries, in this loop turn (then reading pauses and the
        shell calls again later, so one flooding client cannot starve the others and the
        deliveries of a fan-out go out turn by turn); stops while CONNECTING, over its
        rate, or while the store is backlogged."""
        if self.state is State.CONNECTING or self.state is State.CLOSED or self.throttled:
            return
        store = self.core.store
        if store.backlogged and self.state is State.CONNECTED:
            # Its writer is behind: neither read nor handle what is buffered (a single read
            # can hold thousands of packets) until it catches up. A CONNECT still gets its
            # answer; the new client waits once attached.
            self.transport.pause_reading(STORE_BACKLOGGED)
            store.when_drained(self._store_caught_up)
            return
        self._in_input = True
        budget = PACKET_BUDGET
        core = self.core
        delivery_limit = core.deliveries + DELIVERY_BUDGET
        try:
            for packet in self.framer:
                handler = self.handlers.get(type(packet))
                if handler is None:
                    raise ProtocolError(f"{type(packet).__name__} not allowed here")
                handler(self, packet)
                if self.state is not State.CONNECTED:
                    return  # closed, or waiting for the attach
                if self.throttled:
                    break  # the rest waits until the sweep finds its rate refilled
                budget -= 1
                if not budget or core.deliveries >= delivery_limit:
                    self.transport.pause_reading(OVER_BUDGET)
                    self.transport.continue_later()
                    break
            else:
                self.transport.resume_reading(OVER_BUDGET)
            # The answers to what was read (PINGRESP, PUBACK, SUBACK ...) go out now, not
            # after whatever else this loop turn handles; deliveries to other connections
            # are still gathered over the turn.
            self.transport.flush()
        except ProtocolError as exc:
            self._violation(exc)
        except Exception:
            log.exception("internal error handling a packet from %s; closing it", self._name())
            self._close_with(ReasonCode.UNSPECIFIED_ERROR, "internal error", publish_will=True)
        finally:
            self._in_input = False

    def _store_caught_up(self) -> None:
        self.transport.resume_reading(STORE_BACKLOGGED)
        self.transport.continue_later()  # what was read before the pause

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def connection_lost(self) -> None:
        """The network connection ended; unless the client sent DISCONNECT, its will goes out."""
        self._finish(publish_will=True, why="connection lost")

    # -- the attach -----------------------------------------------------------------------

    def challenge(self, data: bytes | None, on_response: Callable[[bytes | None], None]) -> None:
        """The attach's enhanced authentication goes on: send AUTH 0x18 with ``data``, read
        the client's AUTH and pass its Authentication Data to ``on_response`` (None if the
        connection closes first). Until then only AUTH (or DISCONNECT) may come
        [MQTT-3.1.2-30]; anything else is a Protocol Error."""
        if self.state is not State.CONNECTING or self.terms is None:
            on_response(None)
            return
        method = self.terms.auth_method
        props = Properties(authentication_method=method, authentication_data=data)
        self._send(Auth(ReasonCode.CONTINUE_AUTHENTICATION, props))
        self._auth_waiter = on_response
        self.transport.resume_reading(WAITING_FOR_ATTACH)
        self._read_auth()

    def _read_auth(self) -> None:
        """Take the client's answer to :meth:`challenge` from the input, if it is there."""
        waiter = self._auth_waiter
        assert waiter is not None and self.terms is not None
        try:
            packet = self.framer.next_packet()
            if packet is None:
                return
            if isinstance(packet, Disconnect):
                self._finish(publish_will=False, why="DISCONNECT during authentication")
                self.transport.close()
                return
            if not isinstance(packet, Auth):
                raise ProtocolError(f"{type(packet).__name__} during enhanced authentication")
            if packet.properties.authentication_method != self.terms.auth_method:
                raise ProtocolError(
                    "AUTH with another authentication method", ReasonCode.BAD_AUTHENTICATION_METHOD
                )
            if packet.reason_code != ReasonCode.CONTINUE_AUTHENTICATION:
                raise ProtocolError(f"AUTH reason 0x{packet.reason_code:02X} before CONNACK")
        except ProtocolError as exc:
            self._violation(exc)
            return
        self._auth_waiter = None
        waiter(packet.properties.authentication_data or b"")

    def complete_connect(self, auth_data: bytes | None = None) -> None:
        """The attach succeeded: take the session (over), answer CONNACK, go on reading.
        After an enhanced authentication, CONNACK carries its method and ``auth_data``.

        CONNACK for a persistent session is sent once the session is durable; deliveries
        wait in its queue meanwhile, so CONNACK stays the first packet the client gets.
        """
        if self.state is not State.CONNECTING or self.session is not None:
            return  # closed while attaching (nothing to leave behind), or done already
        terms = self.terms
        assert terms is not None
        core = self.core
        users = core.limits.users
        if not users.admits(self.username, terms.client_id):  # a take-over counts once
            self.refuse_connect(
                ReasonCode.QUOTA_EXCEEDED,
                f"user {self.username!r} has {users.maximum} connections already",
            )
            return
        session, present = core.open_session(
            self,
            terms.client_id,
            terms.clean_start,
            terms.session_expiry,
            terms.will,
            self.username,
        )
        users.add(self.username, terms.client_id)
        self.session = session
        core.session_attached(terms.client_id)
        if terms.keep_alive:
            core.watch_keepalive(self, self.last_received + 1.5 * terms.keep_alive)
        if self.level == MQTT_5:
            properties = terms.connack_properties
            if terms.auth_method is not None:
                properties = replace(
                    properties,
                    authentication_method=terms.auth_method,
                    authentication_data=auth_data,
                )
            connack = ConnAck(present, ReasonCode.SUCCESS, properties)
        else:
            connack = ConnAck(present, ConnackV3.ACCEPTED)
        if session.store is None:
            self._start(connack)
        else:
            core.store.after_commit(partial(self._start, connack))

    def refuse_connect(
        self, reason: ReasonCode, text: str, properties: Properties = NO_PROPERTIES
    ) -> None:
        """The attach refused the client (bad credentials, not authorized, use another
        server ...); ``properties`` go with an MQTT 5 CONNACK (e.g. a Server Reference)."""
        if self.state is not State.CONNECTING:
            return
        self._refuse(reason, self.level, properties)
        self._finish(publish_will=False, why=f"refused: {text} (reason 0x{reason:02X})")
        self.transport.close()

    def _start(self, connack: ConnAck) -> None:
        """CONNACK goes out first, then unacknowledged messages, the queue, and input."""
        session = self.session
        if self.state is not State.CONNECTING or session is None:
            return  # closed before the session was durable
        self.state = State.CONNECTED
        self.handlers = _HANDLERS[State.CONNECTED]
        if self.terms is not None and self.terms.auth_method is None:
            self.terms = None  # done with (it holds the password, the CONNACK properties)
        self._send(connack)
        if log.isEnabledFor(logging.INFO):  # its fields are built only when it is logged
            fields = self._log_fields()
            log.info(
                "client %s connected from %s (MQTT %s)",
                self.client_id,
                fields["peer"],
                fields["protocol"],
                extra=fields,
            )
        outbox = self.outbox  # made while attaching if something was delivered meanwhile
        if outbox is not None:
            outbox.resend_inflight()
            outbox.release()
        elif session.inflight or session.queue:
            outbox = self._open_outbox()
            outbox.resend_inflight()
            outbox.pump()
        self.transport.resume_reading(WAITING_FOR_ATTACH)
        if not self._in_input:
            self.handle_input()

    # -- timers and server-initiated closes ---------------------------------------------

    def keepalive_deadline(self) -> float | None:
        """When this connection is due to be closed if nothing more arrives (None: never)."""
        if self.state is State.AWAITING_CONNECT or self.state is State.CONNECTING:
            return self.opened_at + CONNECT_TIMEOUT  # a trickled CONNECT does not extend it
        if self.state is State.CLOSED or self.keep_alive == 0:
            return None
        return self.last_received + 1.5 * self.keep_alive  # [MQTT-3.1.2-22]

    def keepalive_expired(self) -> None:
        if self.state is State.CONNECTING and self._auth_waiter is None:
            # The server has not decided in time (a password check queued, a slow claim):
            # CONNACK tells the client it was not its fault [MQTT-3.2.2.2].
            why = f"not attached within {CONNECT_TIMEOUT:g} s"
            self.refuse_connect(ReasonCode.SERVER_UNAVAILABLE, why)
            return
        if self.state is State.CONNECTED:
            why = f"keep alive {self.keep_alive} s exceeded"
        else:
            why = f"not attached within {CONNECT_TIMEOUT:g} s"
        self._close_with(ReasonCode.KEEP_ALIVE_TIMEOUT, "keep alive timeout", True, why)

    def take_over(self) -> None:
        """Another connection took this client id [MQTT-3.1.4-3]."""
        self._close_with(ReasonCode.SESSION_TAKEN_OVER, "session taken over", publish_will=True)

    def server_shutdown(self) -> None:
        """The server closes the connection without the client's DISCONNECT, so the will
        goes out (or, with a delay, is kept with the session) [MQTT-3.1.2-8]."""
        self._close_with(ReasonCode.SERVER_SHUTTING_DOWN, "server shutting down", True)

    def kick(self, text: str) -> None:
        """An operator ends this connection (admin API): MQTT 5 clients get DISCONNECT
        0x98 with ``text`` as reason string; the will goes out, as for any close the
        client did not ask for."""
        why = f"kicked by an operator: {text}"
        self._close_with(ReasonCode.ADMINISTRATIVE_ACTION, text, publish_will=True, why=why)

    def writes_stuck(self, seconds: float) -> None:
        """The client has read nothing of what was sent for ``seconds``."""
        why = f"it has not read for {seconds:.0f} s"
        self._close_with(ReasonCode.QUOTA_EXCEEDED, "not reading", publish_will=True, why=why)

    def rate_exceeded(self) -> None:
        """The client has stayed over its message or byte rate for ``rate_limit_grace``."""
        why = f"over its message or byte rate for {self.settings.rate_limit_grace} s"
        log.warning("closing %s: %s", self._name(), why)
        self.core.traffic.rate_disconnects += 1
        self._close_with(ReasonCode.MESSAGE_RATE_TOO_HIGH, "message rate too high", True, why)

    def _close_with(
        self, reason: ReasonCode, text: str, publish_will: bool, why: str | None = None
    ) -> None:
        """Close with ``reason`` (MQTT 5: a DISCONNECT with ``text`` as reason string);
        ``why`` is for the log, when it says more than ``text``."""
        if self.state is State.CONNECTED and self.level == MQTT_5:
            self._send_reason(Disconnect(reason, Properties(reason_string=_fit(text))))
        self._finish(publish_will, why or text)
        self.transport.close()

    def _finish(self, publish_will: bool, why: str) -> None:
        """Detach from the session and release what the connection holds (logged with
        ``why``, the reason of the close); idempotent."""
        if self.state is State.CLOSED:
            return
        if self.state is State.CONNECTED:
            if log.isEnabledFor(logging.INFO):
                fields = self._log_fields(why)
                log.info(
                    "client %s disconnected from %s (MQTT %s): %s",
                    self.client_id,
                    fields["peer"],
                    fields["protocol"],
                    why,
                    extra=fields,
                )
        elif log.isEnabledFor(logging.INFO):  # the peer is asked of the socket: only if logged
            log.info("closing %s: %s", self._name(), why)
        self.state = State.CLOSED
        self.handlers = _HANDLERS[State.CLOSED]
        self.framer.clear()
        self._reauthentication = None
        abort = self.attach_abort
        if abort is not None:
            self.attach_abort = None
            abort()
        waiter = self._auth_waiter
        if waiter is not None:
            self._auth_waiter = None
            waiter(None)
        core = self.core
        core.connection_ended(self)
        if self.rate is not None:
            core.limits.throttles.forget(self)
        session = self.session
        if session is not None:
            core.limits.users.remove(self.username, self.client_id)
            core.connection_closed(self, session, self.will if publish_will else None)
        self.session = None
        self.outbox = None

    def _violation(self, exc: ProtocolError) -> None:
        """The one place a protocol error becomes a CONNACK or DISCONNECT and a close."""
        code = exc.reason_code
        why = f"{exc} (reason 0x{code:02X})"
        if self.state is State.AWAITING_CONNECT or self.state is State.CONNECTING:
            # CONNACK carries the refusal for MQTT 5, and for 3.1.1 where it has a code.
            if isinstance(exc, UnsupportedProtocolVersion):
                self._refuse(code, exc.protocol_level)
            elif self.level == MQTT_5 or isinstance(exc, ConnectRefused):
                self._refuse(code, self.level)
            self._finish(publish_will=False, why=why)
            self.transport.close()
        else:
            self._close_with(code, str(exc), publish_will=True, why=why)

    def _refuse(self, code: ReasonCode, level: int, properties: Properties = NO_PROPERTIES) -> None:
        self.core.traffic.refused_with(code)
        if level >= MQTT_5:  # an unknown newer level gets the MQTT 5 form
            data = encode(ConnAck(False, code, properties), MQTT_5)
            if len(data) > self.max_outgoing_packet:  # [MQTT-3.1.2-24]
                data = encode(ConnAck(False, code), MQTT_5)
            self.transport.write(data)
        else:
            v3_code = _V3_REFUSALS.get(code, ConnackV3.SERVER_UNAVAILABLE)
            self.transport.write(encode(ConnAck(False, v3_code), level))

    # -- output ---------------------------------------------------------------------------

    def _send(self, packet: Packet) -> None:
        self.transport.write(encode(packet, self.level))

    def _send_reason(self, packet: _WithReason) -> None:
        """Send a packet that may carry a reason string, without its properties if the
        client's Maximum Packet Size would be exceeded [MQTT-3.1.2-25]."""
        data = encode(packet, self.level)
        if len(data) > self.max_outgoing_packet:
            data = encode(replace(packet, properties=NO_PROPERTIES), self.level)
        self.transport.write(data)

    def _send_when_durable(self, packet: _WithReason) -> None:
        """Send an acknowledgement once the state it confirms is on disk."""
        self.core.store.after_commit(partial(self._send_reason, packet))

    def _puback_when_durable(self, packet: PubAck | bytes) -> None:
        self.qos1_awaiting_commit += 1
        self.core.after_durable(partial(self._puback_now, packet))

    def _puback_now(self, packet: PubAck | bytes) -> None:
        self.qos1_awaiting_commit -= 1
        if isinstance(packet, bytes):
            self.transport.write(packet)
        else:
            self._send_reason(packet)

    def deliver(self, delivery: Delivery) -> None:
        """Send a message now or queue it (see :class:`Outbox`)."""
        (self.outbox or self._open_outbox()).deliver(delivery)

    def _open_outbox(self) -> Outbox:
        """The outbox of an attached connection, made when it is first needed: most
        connections are idle most of the time, and an outbox with what it refers to costs
        about 260 bytes. Made while attaching, it holds deliveries until CONNACK."""
        session = self.session
        assert session is not None, "no outbox before the attach or after the close"
        core = self.core
        outbox = self.outbox = Outbox(
            session,
            self.transport.write,
            core.clock,
            core.note_dropped,
            core.traffic,
            level=self.level,
            send_window=self.send_window,
            max_packet=self.max_outgoing_packet,
            max_queued=self.settings.max_queued_messages,
            topic_alias_maximum=self.topic_alias_maximum,
        )
        if self.state is State.CONNECTING:
            outbox.hold()  # CONNACK first: _start releases it
        return outbox

    def writing_paused(self) -> None:
        """The transport's buffer is full: queue deliveries (bounded, see Session.enqueue)
        instead of buffering without limit, and stop reading the client until it reads what
        it was sent: its own acknowledgements and responses must not pile up either."""
        self.transport.pause_reading(WRITES_BACKED_UP)
        self.core.writes_blocked(self)
        if self.session is not None:
            (self.outbox or self._open_outbox()).writes_paused(True)

    def writing_resumed(self) -> None:
        self.core.writes_unblocked(self)
        self.transport.resume_reading(WRITES_BACKED_UP)
        if self.outbox is not None:
            self.outbox.writes_paused(False)

    def _throttle(self, wait: float, now: float) -> None:
        """Over its rate: read and handle nothing for ``wait`` seconds (the sweep resumes
        it, see :class:`~roost.security.limits.Throttles`)."""
        self.throttled = True
        self.core.traffic.throttled += 1
        self.transport.pause_reading(RATE_LIMITED)
        self.core.limits.throttles.hold(self, now + wait, now)

    def rate_refilled(self) -> None:
        """The sweep found the client's rate refilled: handle what waits, read on."""
        if self.state is State.CLOSED:
            return
        self.throttled = False
        self.transport.resume_reading(RATE_LIMITED)
        self.handle_input()

    # -- packet handlers ------------------------------------------------------------------

    def _on_second_connect(self, packet: Connect) -> None:
        raise ProtocolError("second CONNECT on one connection")  # [MQTT-3.1.0-2]

    def _on_connect(self, packet: Connect) -> None:
        self.level = packet.protocol_level
        if len(self.core.open_connections) > self.settings.max_connections:
            raise ConnectRefused("too many connections", ReasonCode.QUOTA_EXCEEDED)
        if not self.core.limits.admits_connection(self.transport.peer, self.last_received):
            raise ConnectRefused(
                "its address is over its connection rate", ReasonCode.CONNECTION_RATE_EXCEEDED
            )
        terms = negotiate(packet, self.settings)
        self.terms = terms
        self.client_id = terms.client_id
        self.username = terms.username
        self.keep_alive = terms.keep_alive
        self.will = terms.will
        self.max_outgoing_packet = terms.max_outgoing_packet
        self.problem_information = terms.problem_information
        self.send_window = terms.send_window
        self.topic_alias_maximum = terms.topic_alias_maximum
        self.state = State.CONNECTING
        self.handlers = _HANDLERS[State.CONNECTING]
        self.transport.attach(self)

    def _on_publish(self, packet: Publish) -> None:
        settings = self.settings
        session = self.session
        assert session is not None
        topic = packet.topic
        alias = packet.properties.topic_alias
        if alias is not None:
            topic = self._resolve_alias(alias, topic)
        elif not topic:
            raise ProtocolError("PUBLISH without topic name or topic alias")
        self.core.valid_topics.check(topic)
        qos = packet.qos
        if qos > settings.maximum_qos:
            raise ProtocolError(f"QoS {qos} not supported", ReasonCode.QOS_NOT_SUPPORTED)
        if packet.retain and not settings.retain_available:
            raise ProtocolError("retain not supported", ReasonCode.RETAIN_NOT_SUPPORTED)
        if qos:
            if qos == 2 and packet.packet_id in session.inbound_qos2:
                self._send_when_durable(PubRec(packet.packet_id))  # a resend: route it once
                return
            if len(session.inbound_qos2) + self.qos1_awaiting_commit >= settings.receive_maximum:
                raise ProtocolError(
                    "more unacknowledged QoS 1/2 messages than Receive Maximum",
                    ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                )  # [MQTT-3.3.4-9]
        traffic = self.core.traffic
        traffic.messages_in[qos] += 1
        traffic.payload_bytes_in[qos] += len(packet.payload)
        rate = self.rate
        if rate is not None:
            now = self.core.clock()  # not last_received: it may have waited for its rate
            wait = rate.spend(len(packet.payload), now)
            if wait:
                self._throttle(wait, now)
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
            if code == ReasonCode.SUCCESS and ack_properties is NO_PROPERTIES:
                # The commonest acknowledgement, the same bytes at every protocol level
                # (MQTT 5 leaves out a success code without properties [MQTT 3.4.2.1]).
                self._puback_when_durable(PUBACK_SUCCESS + packet.packet_id.to_bytes(2, "big"))
            else:
                self._puback_when_durable(PubAck(packet.packet_id, code, ack_properties))
        else:
            if code < 0x80:
                session.receive_qos2(packet.packet_id)
            self.core.after_durable(
                partial(self._send_reason, PubRec(packet.packet_id, code, ack_properties))
            )

    def _resolve_alias(self, alias: int, topic: str) -> str:
        """Set or use a topic alias the client chose [MQTT-3.3.2-8, -9]."""
        maximum = self.settings.topic_alias_maximum
        if not 0 < alias <= maximum:
            raise ProtocolError(
                f"topic alias {alias} outside 1..{maximum}", ReasonCode.TOPIC_ALIAS_INVALID
            )
        aliases = self.inbound_aliases
        if aliases is None:
            aliases = self.inbound_aliases = {}
        if topic:
            aliases[alias] = topic
            return topic
        known = aliases.get(alias)
        if known is None:
            raise ProtocolError(f"topic alias {alias} is not set")
        return known

    def _accept(self, message: Message) -> tuple[ReasonCode, Properties]:
        """Publish a message, or take it as a transaction's half message or decision;
        returns the reason code (and properties) for PUBACK / PUBREC. A publish the ACL
        refuses is dropped (0x87; a 3.1.1 client sees a normal acknowledgement)."""
        core = self.core
        try:
            if message.topic.startswith(TRANSACTION_TOPICS):
                core.decide_transaction(message.topic, message.payload, self.session)
                return ReasonCode.SUCCESS, NO_PROPERTIES
            half = transaction_fields(message.properties)
            if half is not None:
                core.prepare_transaction(*half, message, self.session)
                return ReasonCode.SUCCESS, NO_PROPERTIES
        except TransactionRefused as exc:
            log.info("%s: %s", self._name(), _fit(str(exc), 200))
            return exc.reason_code, Properties(reason_string=_fit(str(exc)))
        if core.acl is not None and not core.may_write(self.session, message.topic):
            log.info("%s may not publish to %r", self._name(), _fit(message.topic, 200))
            return ReasonCode.NOT_AUTHORIZED, NO_PROPERTIES
        if core.publish(message):
            return ReasonCode.SUCCESS, NO_PROPERTIES
        return ReasonCode.NO_MATCHING_SUBSCRIBERS, NO_PROPERTIES

    def _on_puback(self, packet: PubAck) -> None:
        (self.outbox or self._open_outbox()).complete(
            packet.packet_id, OutboundState.AWAITING_PUBACK
        )

    def _on_pubcomp(self, packet: PubComp) -> None:
        (self.outbox or self._open_outbox()).complete(
            packet.packet_id, OutboundState.AWAITING_PUBCOMP
        )

    def _on_pubrec(self, packet: PubRec) -> None:
        session = self.session
        assert session is not None
        inflight = session.inflight.get(packet.packet_id)
        if inflight is None or inflight.state is OutboundState.AWAITING_PUBACK:
            self._send(PubRel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND))
            return
        if inflight.state is OutboundState.AWAITING_PUBREC:
            if packet.reason_code >= 0x80:  # the flow ends [4.3.3]
                (self.outbox or self._open_outbox()).complete(packet.packet_id, inflight.state)
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
        session = self.session
        assert session is not None
        suback, retained = self.core.subscribe(session, packet, self.level == MQTT_5)
        if session.store is None:
            self._send(suback)
        else:
            # SUBACK first, once durable; then retained and newer messages
            (self.outbox or self._open_outbox()).hold()
            self.core.store.after_commit(partial(self._suback_durable, suback))
        for delivery in retained:
            self.deliver(delivery)

    def _suback_durable(self, suback: SubAck) -> None:
        outbox = self.outbox
        if outbox is not None:  # else closed meanwhile
            self._send(suback)
            outbox.release()

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        unsuback = self.core.unsubscribe(session, packet)
        if session.store is None:
            self._send(unsuback)
        else:
            self._send_when_durable(unsuback)

    def _on_pingreq(self, packet: PingReq) -> None:
        self._send(PingResp())

    def _on_disconnect(self, packet: Disconnect) -> None:
        expiry = packet.properties.session_expiry_interval
        session = self.session
        assert session is not None
        if expiry is not None:
            # The session's interval is the one granted at CONNECT until changed here.
            if session.expiry_interval == 0 and expiry != 0:
                raise ProtocolError("session expiry set at DISCONNECT after 0 at CONNECT")
            expiry = min(expiry, self.settings.max_session_expiry)
            session.set_expiry_interval(expiry, self.core.store)
        publish_will = packet.reason_code == ReasonCode.DISCONNECT_WITH_WILL
        persistent = session.store is not None
        why = "DISCONNECT with will" if publish_will else "DISCONNECT"
        self._finish(publish_will, why)  # a normal DISCONNECT discards the will [MQTT-3.14.4-3]
        if persistent:
            # The client may take the close as the end of its session: let it be durable.
            self.core.store.after_commit(self.transport.close)
        else:
            self.transport.close()

    def _on_auth(self, packet: Auth) -> None:
        """Re-authentication [MQTT-4.12.1]: AUTH 0x19 starts it, AUTH 0x18 goes on; other
        packets flow meanwhile. It must prove the same user; if it fails, DISCONNECT 0x87."""
        method = None if self.terms is None else self.terms.auth_method
        enhanced_auth = self.enhanced_auth
        if method is None or enhanced_auth is None:
            raise ProtocolError("AUTH without an Authentication Method at CONNECT")
        if packet.properties.authentication_method != method:
            raise ProtocolError(  # [MQTT-4.12.1-1]
                "AUTH with another authentication method than at CONNECT",
                ReasonCode.BAD_AUTHENTICATION_METHOD,
            )
        exchange = self._reauthentication
        if packet.reason_code == ReasonCode.REAUTHENTICATE and exchange is None:
            exchange = enhanced_auth.start_exchange(method, self.transport.peer)
            if exchange is None:
                raise ProtocolError(
                    f"authentication method {method!r} is no longer offered",
                    ReasonCode.BAD_AUTHENTICATION_METHOD,
                )
            self._reauthentication = exchange
        elif packet.reason_code != ReasonCode.CONTINUE_AUTHENTICATION or exchange is None:
            raise ProtocolError(f"AUTH reason 0x{packet.reason_code:02X} not expected now")
        step = exchange.step(packet.properties.authentication_data or b"")
        props = Properties(authentication_method=method, authentication_data=step.data)
        if step.reason == ReasonCode.CONTINUE_AUTHENTICATION:
            self._send(Auth(ReasonCode.CONTINUE_AUTHENTICATION, props))
            return
        self._reauthentication = None
        if step.reason == ReasonCode.SUCCESS and step.identity in (None, self.username):
            log.info("%s re-authenticated", self._name())
            self._send(Auth(ReasonCode.SUCCESS, props))
            return
        reason = ReasonCode.NOT_AUTHORIZED if step.reason == ReasonCode.SUCCESS else step.reason
        self._close_with(reason, "re-authentication failed", publish_will=True)

    def _name(self) -> str:
        return f"client {self.client_id or '?'} ({self.transport.peer})"

    def _protocol(self) -> str:
        return PROTOCOL_VERSIONS.get(self.level, str(self.level))

    def _log_fields(self, reason: str | None = None) -> dict[str, object]:
        """The client's details as fields of a log record (see roost.logs)."""
        return {
            "client_id": self.client_id,
            "peer": self.transport.peer,
            "protocol": self._protocol(),
            "reason": reason,
        }


def _fit(text: str, limit: int = MAX_REASON_BYTES) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (on a character boundary)."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", "ignore") + "..."


_Handler = Callable[[ServerConnection, Any], None]

# Which packet is legal in which state, and who handles it. Before CONNECT only CONNECT is
# accepted [MQTT-3.1.0-1]; server-to-client packets are never accepted from a client.
# While CONNECTING nothing is read, except the AUTH an enhanced authentication waits for
# (see ServerConnection.challenge).
_HANDLERS: dict[State, dict[type, _Handler]] = {State.CLOSED: {}, State.CONNECTING: {}}
_HANDLERS[State.AWAITING_CONNECT] = {Connect: ServerConnection._on_connect}
_HANDLERS[State.CONNECTED] = {
    Connect: ServerConnection._on_second_connect,
    Publish: ServerConnection._on_publish,
    PubAck: ServerConnection._on_puback,
    PubRec: ServerConnection._on_pubrec,
    PubRel: ServerConnection._on_pubrel,
    PubComp: ServerConnection._on_pubcomp,
    Subscribe: ServerConnection._on_subscribe,
    Unsubscribe: ServerConnection._on_unsubscribe,
    PingReq: ServerConnection._on_pingreq,
    Disconnect: ServerConnection._on_disconnect,
    Auth: ServerConnection._on_auth,
}
