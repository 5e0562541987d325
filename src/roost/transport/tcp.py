"""MQTT over TCP: an ``asyncio.Protocol`` that hands bytes to the sans-I/O connection.

Writes made while handling one batch of input are gathered and flushed once per loop
iteration, so a publisher's burst reaches each subscriber socket in one system call.
"""

from __future__ import annotations

import asyncio
import socket
from typing import cast

from roost.core import BrokerCore
from roost.protocol import ClientProtocol


class TcpConnection(asyncio.Protocol):
    """One accepted TCP connection."""

    __slots__ = ("_client", "_core", "_flush_handle", "_loop", "_out", "_transport", "peer")

    def __init__(self, core: BrokerCore) -> None:
        self._core = core
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._client: ClientProtocol | None = None
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self.peer = "?"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
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
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)

    def close(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        if not out or self._transport is None or self._transport.is_closing():
            out.clear()
            return
        self._transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
