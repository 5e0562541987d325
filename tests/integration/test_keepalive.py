"""Keep alive: a silent client is dropped after 1.5 x Keep Alive (and its will published),
PINGREQ keeps it alive, 0 disables the timeout, and MQTT 5 Server Keep Alive overrides it."""

from __future__ import annotations

import time
from typing import Any

from paho_helpers import V5, subscribe
from rawmqtt import LEVELS, Clients, RawClient, clients_fixture
from roost.codec.packets import Disconnect, Packet, PingReq, PingResp, Will

clients = clients_fixture()


def assert_timeout_close(packets: list[Packet]) -> None:
    """Closed silently, or (MQTT 5) after DISCONNECT 0x8D Keep alive timeout."""
    assert all(isinstance(p, Disconnect) and p.reason_code == 0x8D for p in packets), packets


def connect_silent(raw: RawClient, client_id: str, level: int, keep_alive: int, **kw: Any) -> Any:
    """Connect and return (monotonic time before CONNECT was sent, time CONNACK arrived, ack)."""
    sent = time.monotonic()
    connack = raw.connect(client_id, level=level, keep_alive=keep_alive, **kw)
    acked = time.monotonic()
    assert connack.reason_code == 0, connack
    return sent, acked, connack


@LEVELS
def test_silent_client_dropped_after_one_and_a_half_keep_alive(
    broker: Any, clients: Clients, level: int
) -> None:
    sub, collector = clients.paho(broker, client_id="ka-watch", version=V5)
    subscribe(sub, collector, "ka/will", 1)
    raw = clients.raw(broker)
    will = Will(topic="ka/will", payload=b"timed out", qos=1)
    sent, acked, _ = connect_silent(raw, "ka1", level, 1, will=will)
    assert_timeout_close(raw.expect_closed(4))
    closed = time.monotonic()
    assert closed - sent >= 1.5, f"dropped after {closed - sent:.2f}s, before 1.5 x keep alive"
    assert closed - acked <= 2.5, f"dropped after {closed - acked:.2f}s, later than 1.5 s + 1 s"
    collector.wait_for_messages(1, 3)
    assert collector.payloads() == [b"timed out"]


def test_pingreq_keeps_connection_alive(broker: Any, clients: Clients) -> None:
    """Pinging every 0.5 s for 3 s keeps a keep-alive-1 client; once it stops, the timeout
    counts from its last PINGREQ, not from the CONNECT."""
    raw = clients.raw(broker)
    _, acked, _ = connect_silent(raw, "pinger", 5, 1)
    pings = 0
    next_ping = acked + 0.5
    while next_ping <= acked + 3.0:
        raw.expect_silence(next_ping - time.monotonic())
        last_sent = time.monotonic()
        raw.send_packet(PingReq())
        reply = raw.recv_packet(1)
        assert isinstance(reply, PingResp), reply
        pings += 1
        next_ping += 0.5
    assert pings == 6
    assert time.monotonic() - acked >= 3.0
    assert_timeout_close(raw.expect_closed(4))
    silent = time.monotonic() - last_sent
    assert 1.5 <= silent <= 2.5, f"dropped {silent:.2f}s after the last PINGREQ, expected 1.5-2.5"


def test_keep_alive_zero_never_times_out(broker: Any, clients: Clients) -> None:
    """Run side by side: the keep-alive-1 client is dropped, the keep-alive-0 one is not."""
    forever = clients.raw(broker)
    _, forever_acked, _ = connect_silent(forever, "ka0", 5, 0)
    short = clients.raw(broker)
    connect_silent(short, "ka1", 5, 1)
    assert_timeout_close(short.expect_closed(4))
    remaining = forever_acked + 2.2 - time.monotonic()
    if remaining > 0:
        forever.expect_silence(remaining)
    assert time.monotonic() - forever_acked > 2.0
    forever.send_packet(PingReq())
    assert isinstance(forever.recv_packet(2), PingResp)


def test_server_keep_alive_caps_client_value(make_broker: Any, clients: Clients) -> None:
    broker = make_broker(max_keep_alive=2)
    raw = clients.raw(broker)
    sent, acked, connack = connect_silent(raw, "greedy", 5, 60)
    assert connack.properties.server_keep_alive == 2, connack
    assert_timeout_close(raw.expect_closed(6))
    closed = time.monotonic()
    assert closed - sent >= 3.0, f"dropped after {closed - sent:.2f}s, before 1.5 x 2 s"
    assert closed - acked <= 4.0, f"dropped after {closed - acked:.2f}s, later than 4 s"
