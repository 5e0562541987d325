"""MQTT over TCP and over TLS: the bytes of the socket (after the TLS layer asyncio puts
below, on a TLS listener) are the MQTT stream. See :mod:`roost.transport.stream` for
write gathering, back-pressure and the lingering close they share with WebSocket.

Behind a load balancer (``proxy_protocol``, plain TCP listeners only) a connection must
start with a PROXY protocol header naming the real client; the MQTT connection starts after
it, so the framer never sees the header, and a connection without one is closed.
"""

from __future__ import annotations

import asyncio

from roost.address import host_port
from roost.config import Listener
from roost.core import BrokerCore
from roost.protocol import Attach
from roost.transport.proxy import ProxyHeaderError, parse_proxy_header
from roost.transport.stream import StreamConnection


class TcpConnection(StreamConnection):
    """One accepted TCP or TLS connection."""

    __slots__ = ("_header",)

    def __init__(self, core: BrokerCore, attach: Attach, listener: Listener) -> None:
        super().__init__(core, attach, listener)
        self._header: bytes | None = None  # PROXY header bytes so far, while one is awaited

    def _opened(self) -> None:
        if self.listener.proxy_protocol:
            self._header = b""
            self._wait_at_most("PROXY header")
        else:
            self._start_mqtt()

    def data_received(self, data: bytes) -> None:
        if self._header is not None:
            self._read_proxy_header(data)
        else:
            self._mqtt_received(data)

    def _read_proxy_header(self, data: bytes) -> None:
        """Gather the PROXY header, take the client's address from it, and hand what follows
        to a new MQTT connection."""
        assert self._header is not None
        self._header += data
        try:
            header = parse_proxy_header(self._header)
        except ProxyHeaderError as exc:
            self._header = None
            self._refuse(str(exc))
            return
        if header is None:
            return
        rest, self._header = self._header[header.length :], None
        if header.source is not None:
            self._peer = host_port(header.source)
        self._start_mqtt()
        if rest:
            self._mqtt_received(rest)

    def _send(self, transport: asyncio.Transport, data: bytes) -> None:
        transport.write(data)

    def _end_output(self, transport: asyncio.Transport) -> None:
        if self._shut(transport):
            self._linger(transport)
