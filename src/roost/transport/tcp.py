"""MQTT over TCP: an ``asyncio.Protocol`` that hands bytes to the sans-I/O connection.

Writes made while handling input are gathered and flushed once per loop iteration (or as
soon as ``FLUSH_BYTES`` have gathered), so a publisher's burst reaches each subscriber
socket in few system calls. When a client reads slower than it is sent to, the transport
pauses writing: the connection queues deliveries (bounded per session) and stops reading
that client until it catches up.

Reading is paused for several reasons at once (attach in progress, input budget used up,
writes backed up); the socket is read only while none applies. A close the server starts
lingers: the write side is shut after the last packet (a DISCONNECT with its reason code)
and input is read and discarded for up to ``LINGER_SECONDS``, so a client still sending
reads that DISCONNECT instead of a connection reset.

Behind a load balancer (``proxy_protocol = true``) a connection must start with a PROXY
protocol header naming the real client; the MQTT connection starts after it, so the framer
never sees the header, and a connection without one is closed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from roost.core import BrokerCore
from roost.protocol import CONNECT_TIMEOUT, Attach, ServerConnection, attach_at_once
from roost.transport.proxy import ProxyHeaderError, parse_proxy_header

log = logging.getLogger("roost.transport")

FLUSH_BYTES = 65_536  # flush gathered writes at once beyond this size
WRITE_BUFFER_HIGH = 1_048_576  # transport buffer size at which delivery is paused
WRITE_BUFFER_LOW = 262_144  # ... and resumed
LINGER_SECONDS = 2.0  # how long a closing connection still reads (and discards) input


class TcpConnection(asyncio.Protocol):
    """One accepted TCP connection."""

    __slots__ = (
        "_attach",
        "_client",
        "_core",
        "_flush_handle",
        "_header",
        "_header_timer",
        "_linger_handle",
        "_loop",
        "_out",
        "_out_size",
        "_paused",
        "_transport",
        "peer",
    )

    def __init__(self, core: BrokerCore, attach: Attach = attach_at_once) -> None:
        self._core = core
        self._attach = attach
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._client: ServerConnection | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_handle: asyncio.Handle | None = None
        self._linger_handle: asyncio.TimerHandle | None = None
        self._paused = 0  # the reasons reading is paused for (bits)
        self._header: bytes | None = None  # PROXY header bytes so far, while one is awaited
        self._header_timer: asyncio.TimerHandle | None = None
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = f"{peer[0]}:{peer[1]}"
        if self._core.settings.proxy_protocol:
            self._header = b""
            self._header_timer = self._loop.call_later(
                CONNECT_TIMEOUT, self._refuse, f"no PROXY header within {CONNECT_TIMEOUT:g} s"
            )
        else:
            self._client = ServerConnection(self._core, self, self._attach)

    def data_received(self, data: bytes) -> None:
        self._core.traffic.bytes_in += len(data)
        if self._header is not None:
            self._read_proxy_header(data)
        elif self._client is not None:
            self._client.data_received(data)
        # else: closed and lingering; the input is discarded

    def _read_proxy_header(self, data: bytes) -> None:
        """Gather the PROXY header, take the client's address from it, and hand what follows
        to a new MQTT connection."""
        assert self._header is not None
        self._header += data
        try:
            header = parse_proxy_header(self._header)
        except ProxyHeaderError as exc:
            self._refuse(str(exc))
            return
        if header is None:
            return
        rest, self._header = self._header[header.length :], None
        if self._header_timer is not None:
            self._header_timer.cancel()
        if header.source is not None:
            self.peer = f"{header.source[0]}:{header.source[1]}"
        self._client = ServerConnection(self._core, self, self._attach)
        if rest:
            self._client.data_received(rest)

    def _refuse(self, reason: str) -> None:
        """Close a connection that did not start with a valid PROXY header."""
        log.warning("closing the connection from %s: %s", self.peer, reason)
        self._header = None
        if self._transport is not None:
            self._transport.abort()

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.writing_paused()

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.writing_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        self._out.clear()
        client, self._client = self._client, None
        if client is not None:
            client.connection_lost()

    # -- the Transport interface of ServerConnection ----------------------------------------

    def write(self, data: bytes) -> None:
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size >= FLUSH_BYTES:
            if self._flush_handle is not None:
                self._flush_handle.cancel()
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def close(self) -> None:
        """Send what is gathered, shut the write side, and discard input until the client
        closes or ``LINGER_SECONDS`` pass."""
        self._flush()
        self._client = None  # it has finished; input from now on is discarded
        transport = self._transport
        if transport is None or transport.is_closing() or self._linger_handle is not None:
            return
        if not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:  # the client is gone already
            transport.abort()
            return
        self._linger_handle = self._loop.call_later(LINGER_SECONDS, transport.abort)
        if self._paused:
            self._paused = 0
            transport.resume_reading()

    def pause_reading(self, reason: int) -> None:
        if not self._paused and self._transport is not None and self._client is not None:
            self._transport.pause_reading()
        self._paused |= reason

    def resume_reading(self, reason: int) -> None:
        if self._paused & reason:
            self._paused &= ~reason
            if not self._paused and self._transport is not None and self._client is not None:
                self._transport.resume_reading()

    def continue_later(self) -> None:
        self._loop.call_soon(self._continue)

    def _continue(self) -> None:
        if self._client is not None:
            self._client.handle_input()

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        self._out_size = 0
        transport = self._transport
        if not out or transport is None or transport.is_closing() or self._linger_handle:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        transport.write(data)
        self._core.traffic.bytes_out += len(data)
