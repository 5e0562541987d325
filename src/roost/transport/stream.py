"""What every MQTT connection shell shares, whatever carries the bytes (TCP, TLS,
WebSocket, WebSocket over TLS): an ``asyncio.Protocol`` that hands MQTT bytes to the
sans-I/O connection and implements its ``Transport``.

Writes made while handling input are gathered and flushed once per loop iteration (or as
soon as ``FLUSH_BYTES`` have gathered), so a publisher's burst reaches each subscriber
socket in few system calls. When a client reads slower than it is sent to, the asyncio
transport pauses writing: the connection queues deliveries (bounded per session) and stops
reading that client until it catches up.

Reading is paused for several reasons at once (attach in progress, input budget used up,
writes backed up); the socket is read only while none applies. A close the server starts
lingers: the output is ended after the last packet (a DISCONNECT with its reason code) and
input is read and discarded for up to ``LINGER_SECONDS``, so a client still sending reads
that DISCONNECT instead of a connection reset.

A subclass says how MQTT bytes arrive (``data_received``), how they leave (``_send``), how
the output ends (``_end_output``), and calls ``_start_mqtt`` once the MQTT stream begins.
On a TLS listener asyncio completes the handshake before ``connection_made``, so the
client's verified certificate is known from the start.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

from roost.address import host_port
from roost.config import TLS_KINDS, Listener
from roost.core import BrokerCore
from roost.protocol import CONNECT_TIMEOUT, Attach, ServerConnection
from roost.seldom import Seldom
from roost.transport.certificate import Certificate, certificate_fields, common_name

log = logging.getLogger("roost.transport")

FLUSH_BYTES = 65_536  # flush gathered writes at once beyond this size
WRITE_BUFFER_HIGH = 1_048_576  # transport buffer size at which delivery is paused
WRITE_BUFFER_LOW = 262_144  # ... and resumed
LINGER_SECONDS = 2.0  # how long a closing connection still reads (and discards) input
# Sockets accepted beyond max_connections, so that a client over the limit reads why in a
# CONNACK (0x97); beyond these a socket is closed at once, whatever it would have sent
# (a WebSocket handshake, a PROXY header, or nothing).
OVER_LIMIT_SOCKETS = 16


class StreamConnection(asyncio.Protocol):
    """One accepted connection of ``listener``."""

    __slots__ = (
        "_attach",
        "_client",
        "_core",
        "_flush_handle",
        "_linger_handle",
        "_loop",
        "_out",
        "_out_size",
        "_paused",
        "_peer",
        "_seldom",
        "_transport",
        "listener",
    )

    # What few connections have, or only for a while (see roost.seldom): the client's
    # verified TLS certificate, the identity the listener takes from it
    # (use_identity_as_username), the deadline of what comes before MQTT (a PROXY header,
    # a WebSocket handshake).
    certificate: Seldom[Certificate] = Seldom()
    identity: Seldom[str] = Seldom()
    _deadline: Seldom[asyncio.TimerHandle] = Seldom()

    def __init__(self, core: BrokerCore, attach: Attach, listener: Listener) -> None:
        self._core = core
        self._attach = attach
        self.listener = listener
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._client: ServerConnection | None = None
        self._out: list[bytes] | None = None  # writes gathered since the last flush
        self._out_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self._linger_handle: asyncio.TimerHandle | None = None
        self._paused = 0  # the reasons reading is paused for (bits)
        self._peer: str | None = None  # from a PROXY header, or kept at once on TLS (see peer)
        self._seldom: dict[str, object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        traffic = self._core.traffic
        if traffic.sockets >= self._core.settings.max_connections + OVER_LIMIT_SOCKETS:
            traffic.sockets_refused += 1
            cast(asyncio.Transport, transport).abort()  # connection_lost sees no _transport
            return
        traffic.sockets += 1
        # No TCP_NODELAY here: Roost's epoll server, asyncio and uvloop set it on every
        # accepted TCP socket, and asking uvloop for the "socket" would cache a socket
        # object on each transport (72 bytes).
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW)
        if self.listener.kind in TLS_KINDS:
            self._peer = self._socket_peer()  # it cannot be asked in connection_lost
        peercert = transport.get_extra_info("peercert")
        if peercert:  # {} when it was not verified: only a verified one counts
            self.certificate = certificate_fields(peercert)
        self._opened()

    @property
    def peer(self) -> str:
        """The client's "address:port" (from the PROXY header when it named one), or "?".

        Asked of the transport each time rather than kept: it is read for logs, limits
        and authentication only, and keeping it cost a 64-byte string per connection. A
        TCP transport (Roost's own, asyncio's, uvloop's) keeps the address it read at
        accept, so the log line of a close (even a reset) still names it; a TLS transport
        lets go of the TCP one before ``connection_lost``, so a TLS connection keeps its
        peer from the start (see ``connection_made``).
        """
        return self._socket_peer() if self._peer is None else self._peer

    def _socket_peer(self) -> str:
        if self._transport is None:
            return "?"
        try:
            address = self._transport.get_extra_info("peername")
        except (AttributeError, OSError):  # one that asks a socket it has let go of
            return "?"
        return host_port(address)

    def _opened(self) -> None:
        """The connection is up (TLS handshake done): start MQTT, or what comes before it."""
        self._start_mqtt()

    def _wait_at_most(self, what: str) -> None:
        """Refuse the connection unless ``_start_mqtt`` runs within CONNECT_TIMEOUT."""
        self._deadline = self._loop.call_later(
            CONNECT_TIMEOUT, self._refuse, f"no {what} within {CONNECT_TIMEOUT:g} s"
        )

    def _start_mqtt(self) -> None:
        """The MQTT byte stream starts now."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self.listener.use_identity_as_username:
            assert self.certificate is not None  # require_certificate: the handshake made sure
            self.identity = common_name(self.certificate)
            if self.identity is None:
                self._refuse("its certificate has no CN to take as its user name")
                return
        self._client = ServerConnection(self._core, self)

    def _refuse(self, reason: str) -> None:
        """Close a connection that does not get as far as MQTT."""
        log.warning("closing the connection from %s: %s", self.peer, reason)
        if self._transport is not None:
            self._transport.abort()

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.writing_paused()

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.writing_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._core.traffic.sockets -= 1
        for handle in (self._deadline, self._flush_handle, self._linger_handle):
            if handle is not None:
                handle.cancel()
        self._deadline = self._flush_handle = self._linger_handle = None
        self._out = None
        client, self._client = self._client, None
        if client is not None:
            client.connection_lost()

    def _mqtt_received(self, data: bytes) -> None:
        """MQTT bytes from the client; discarded once the connection is closing."""
        self._core.traffic.bytes_in += len(data)
        if self._client is not None:
            self._client.data_received(data)

    # -- the Transport interface of ServerConnection ----------------------------------------

    def write(self, data: bytes) -> None:
        out = self._out
        if out is None:
            self._out = [data]  # a list only while writes wait: idle connections hold none
        else:
            out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_BYTES:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def close(self) -> None:
        """Send what is gathered, end the output, and discard input until the client
        closes or ``LINGER_SECONDS`` pass."""
        self._flush()
        self._client = None  # it has finished; input from now on is discarded
        transport = self._transport
        if transport is None or transport.is_closing() or self._linger_handle is not None:
            return
        self._end_output(transport)

    def pause_reading(self, reason: int) -> None:
        if not self._paused and self._transport is not None and self._client is not None:
            self._transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self._transport is not None and self._client is not None:
                self._transport.resume_reading()

    def attach(self, connection: ServerConnection) -> None:
        self._attach(connection)

    def continue_later(self) -> None:
        self._loop.call_soon(self._continue)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush()

    def _continue(self) -> None:
        if self._client is not None:
            self._client.handle_input()

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        self._out = None
        self._out_size = 0
        transport = self._transport
        if not out or transport is None or transport.is_closing() or self._linger_handle:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        self._send(transport, data)
        self._core.traffic.bytes_out += len(data)

    # -- what a kind of connection says -----------------------------------------------------

    def _send(self, transport: asyncio.Transport, data: bytes) -> None:
        """Put MQTT bytes on the wire."""
        raise NotImplementedError

    def _end_output(self, transport: asyncio.Transport) -> None:
        """End the output after the last packet (``_shut`` and ``_linger``, or what the
        kind of connection does first)."""
        raise NotImplementedError

    @staticmethod
    def _shut(transport: asyncio.Transport) -> bool:
        """Half-close where the transport can (plain TCP), else close it (TLS has no
        half-close in asyncio: ``close`` sends close_notify after the buffered data);
        False when the client is gone already."""
        if not transport.can_write_eof():
            transport.close()
            return True
        try:
            transport.write_eof()
        except OSError:
            transport.abort()
            return False
        return True

    def _linger(self, transport: asyncio.Transport) -> None:
        """Read, and discard, what the client still sends until it closes, for at most
        LINGER_SECONDS: a client still sending then reads what it was sent last (a
        DISCONNECT, a close frame) instead of a reset; one that never reads is dropped."""
        if self._linger_handle is not None:
            return
        self._linger_handle = self._loop.call_later(LINGER_SECONDS, transport.abort)
        if self._paused and not transport.is_closing():
            self._paused = 0
            transport.resume_reading()
