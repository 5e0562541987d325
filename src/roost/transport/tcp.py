"""MQTT over TCP: an ``asyncio.Protocol`` that hands bytes to the sans-I/O connection.

Writes made while handling input are gathered and flushed once per loop iteration (or as
soon as ``FLUSH_BYTES`` have gathered), so a publisher's burst reaches each subscriber
socket in few system calls. When a client reads slower than it is sent to, the transport
pauses writing and the connection queues deliveries instead (bounded per session).
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from roost.core import BrokerCore
from roost.protocol import ClientProtocol

FLUSH_BYTES = 65_536  # flush gathered writes at once beyond this size
WRITE_BUFFER_HIGH = 1_048_576  # transport buffer size at which delivery is paused
WRITE_BUFFER_LOW = 262_144  # ... and resumed


class TcpConnection(asyncio.Protocol):
    """One accepted TCP connection."""

    __slots__ = (
        "_client",
        "_core",
        "_flush_handle",
        "_loop",
        "_out",
        "_out_size",
        "_transport",
        "peer",
    )

    def __init__(self, core: BrokerCore) -> None:
        self._core = core
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._client: ClientProtocol | None = None
        self._out: list[bytes] = []
        self._out_size = 0
        self._flush_handle: asyncio.Handle | None = None
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
        self._client = ClientProtocol(self._core, self)

    def data_received(self, data: bytes) -> None:
        assert self._client is not None
        self._client.data_received(data)

    def pause_writing(self) -> None:
        if self._client is not None:
            self._client.writing_paused()

    def resume_writing(self) -> None:
        if self._client is not None:
            self._client.writing_resumed()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out.clear()
        if self._client is not None:
            self._client.connection_lost()

    # -- the Transport interface of ClientProtocol -----------------------------------------

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
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        self._out_size = 0
        if not out or self._transport is None or self._transport.is_closing():
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self._transport.write(data)
