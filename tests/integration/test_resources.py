"""A closed connection releases what it held at once: its buffers, its session reference,
its transport, whatever keep alive it asked for."""

from __future__ import annotations

import gc
import socket

from paho_helpers import wait_until
from rawmqtt import utf8
from roost.protocol import ServerConnection


def live_connections() -> int:
    """ServerConnection objects that still exist (garbage or not)."""
    return sum(type(o) is ServerConnection for o in gc.get_objects())


def test_a_closed_connection_is_released_at_once(make_broker, raw) -> None:
    broker = make_broker(store="memory", max_packet_size=2_000_000)
    core = broker.broker.core
    gc.collect()  # garbage of earlier tests must not be counted, nor vanish meanwhile
    before = live_connections()
    for n in range(3):
        client = raw(broker, 4)
        client.connect(f"half-sent-{n}", keep_alive=65535)
        # Most of a 1 MB PUBLISH, then the client goes away without the rest.
        body = utf8("big") + b"x" * 1_000_000
        header = b"\x30" + bytes([0x80 | 0x7F, 0x80 | 0x7F, 0x3F])  # remaining length 1 MB
        client.send(header + body[:900_000])
        client.drop()
    wait_until(lambda: not core.open_connections, what="every connection closed")
    assert live_connections() == before
    assert len(core.keepalive) == 0


def test_accepted_connections_send_without_delay(make_broker, raw) -> None:
    """Roost gathers its writes per loop turn itself; the event loop turns Nagle off on
    every accepted TCP socket (Roost does not ask for the socket: uvloop would keep an
    object per connection for it)."""
    broker = make_broker(store="memory")
    client = raw(broker, 4)
    client.connect("nodelay")

    async def nodelay() -> list[int]:
        return [
            connection.transport._transport.get_extra_info("socket").getsockopt(
                socket.IPPROTO_TCP, socket.TCP_NODELAY
            )
            for connection in broker.broker.core.open_connections
        ]

    assert broker.call(nodelay()) == [1]
