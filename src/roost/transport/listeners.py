"""Opening the node's MQTT listeners: one server per configured listener, with the
connection class of its kind and, for ``tls`` and ``wss``, its TLS context. Plain
listeners are served from an epoll set (``roost.transport.epoll``: far less memory per
connection), TLS ones by asyncio's own server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from roost.config import TLS_KINDS, WEBSOCKET_KINDS, Listener
from roost.core import BrokerCore
from roost.errors import ConfigError
from roost.protocol import CONNECT_TIMEOUT, Attach
from roost.transport import epoll
from roost.transport.stream import StreamConnection
from roost.transport.tcp import TcpConnection
from roost.transport.tls import server_context
from roost.transport.websocket import WebSocketConnection

BACKLOG = 4096


@dataclass(frozen=True, slots=True)
class BoundListener:
    """A listener and the port it got (the one asked for, or a free one for port 0)."""

    listener: Listener
    port: int

    @property
    def address(self) -> str:
        return f"{self.listener.host}:{self.port}"

    def info(self) -> dict[str, object]:
        """What the admin API shows: where it was configured, kind, address (and path)."""
        shown: dict[str, object] = {
            "name": self.listener.name,
            "kind": self.listener.kind,
            "address": self.address,
        }
        if self.listener.kind in WEBSOCKET_KINDS:
            shown["path"] = self.listener.path
        if self.listener.kind in TLS_KINDS:
            shown["require_certificate"] = self.listener.require_certificate
        return shown

    def describe(self) -> str:
        """``HOST:PORT (kind[ path])``, as the start-up log line shows it."""
        kind = self.listener.kind
        if kind in WEBSOCKET_KINDS:
            kind += f" {self.listener.path}"
        return f"{self.address} ({kind})"


async def open_listener(
    listener: Listener, core: BrokerCore, attach: Attach, reuse_port: bool = False
) -> tuple[asyncio.AbstractServer, BoundListener]:
    """A server for ``listener``, bound but not serving yet (``start_serving``).
    ``reuse_port``: SO_REUSEPORT, so that the processes of one node (``workers``) each
    listen on the same port and the kernel spreads the connections over them.

    Raises ConfigError naming the listener when its certificate or key cannot be used or
    its address cannot be bound (taken, not an address of this machine).
    """
    kind: type[StreamConnection]
    kind = WebSocketConnection if listener.kind in WEBSOCKET_KINDS else TcpConnection
    tls = server_context(listener) if listener.kind in TLS_KINDS else None

    def connection() -> StreamConnection:
        return kind(core, attach, listener)

    server: asyncio.Server | epoll.EpollServer
    try:
        if tls is None and epoll.AVAILABLE:
            server = await epoll.EpollServer.listen(
                connection,
                listener.host,
                listener.port,
                reuse_port=reuse_port,
                backlog=BACKLOG,
            )
        else:
            server = await asyncio.get_running_loop().create_server(
                connection,
                listener.host,
                listener.port,
                ssl=tls,
                ssl_handshake_timeout=CONNECT_TIMEOUT if tls is not None else None,
                reuse_address=True,
                reuse_port=reuse_port,
                backlog=BACKLOG,
                start_serving=False,
            )
    except OSError as exc:
        address = f"{listener.host}:{listener.port}"
        raise ConfigError(f"{listener.name}: cannot listen on {address}: {exc.strerror}") from exc
    return server, BoundListener(listener, server.sockets[0].getsockname()[1])
