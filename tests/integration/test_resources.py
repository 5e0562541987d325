"""A closed connection releases what it held at once: its buffers, its session reference,
its transport, whatever keep alive it asked for."""

from __future__ import annotations

import gc
import socket

import proxyheaders
from paho_helpers import wait_until
from rawmqtt import connect_bytes, utf8
from roost.protocol import ServerConnection
from roost.security.passwords import make_entry, write_text


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
    """Roost gathers its writes per loop turn itself, so Nagle is off on every accepted
    TCP socket."""
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


def test_an_idle_connection_keeps_nothing_it_no_longer_needs(make_broker, raw, tmp_path) -> None:
    """After a password check (which the attach could have aborted) the connection of an
    idle client keeps no abort callback, no CONNECT terms, no outbox, no peer string."""
    passwords = tmp_path / "passwords"
    write_text(str(passwords), make_entry("alice", "wonderland").line() + "\n")
    broker = make_broker(password_file=str(passwords))
    client = raw(broker, 4)
    connack = client.connect("idle", username="alice", password=b"wonderland")
    assert connack is not None and connack.reason_code == 0

    connection: ServerConnection = broker.on_loop(lambda: broker.broker.core.connections["idle"])
    assert connection.attach_abort is None and connection._seldom is None
    assert connection.terms is None and connection.outbox is None
    assert connection.transport._peer is None and connection.transport._seldom is None
    host, port = client.sock.getsockname()
    assert connection.transport.peer == f"{host}:{port}"  # asked of the socket


def test_behind_a_proxy_header_the_connection_drops_its_deadline(make_broker, raw) -> None:
    """The deadline for the PROXY header goes once MQTT starts; the header's address stays."""
    broker = make_broker(proxy_protocol=True)
    client = raw(broker, 4)
    client.send(proxyheaders.v2("203.0.113.7", 40000) + connect_bytes("behind-proxy"))
    assert client.recv().name == "CONNACK"

    transport = broker.on_loop(lambda: broker.broker.core.connections["behind-proxy"].transport)
    assert transport._deadline is None and transport._seldom is None
    assert transport.peer == "203.0.113.7:40000"
