"""Flow control a client cannot defeat: a client that never reads is not buffered for
without limit and is closed when it stays stuck; one flooding client does not starve the
others; a close the server starts lets a client that is still sending read why."""

from __future__ import annotations

import socket
import struct
import threading
import time

from paho_helpers import wait_until
from rawmqtt import frame, utf8
from roost.transport.stream import WRITE_BUFFER_HIGH


def small_buffers(client) -> None:
    """Make the client's socket buffers small, so a client that does not read stalls soon."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)


def small_server_buffers(broker) -> None:
    """A small send buffer on the broker's side of every open connection: the test then
    measures what the broker itself holds, not what the kernel absorbs."""

    async def shrink() -> None:
        for connection in broker.broker.core.open_connections:
            sock = connection.transport._transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    broker.call(shrink())


def server_side_buffered(broker) -> int:
    """Bytes the broker holds in its transports' write buffers, for every connection."""

    async def measure() -> int:
        total = 0
        for connection in broker.broker.core.open_connections:
            total += connection.transport._transport.get_write_buffer_size()
        return total

    return int(broker.call(measure()))


def input_state(broker) -> tuple[bool, int]:
    """Whether the broker reads the (only) connection's socket, and how many bytes it has
    read and not yet handled."""

    def state() -> tuple[bool, int]:
        (connection,) = broker.broker.core.open_connections
        return connection.transport._transport.is_reading(), connection.framer.buffered

    reading, unhandled = broker.on_loop(state)
    return bool(reading), int(unhandled)


def test_a_client_that_sends_but_never_reads_is_not_buffered_for(make_broker, raw) -> None:
    broker = make_broker(store="memory", write_stall_timeout=3600)
    # A small receive buffer from the start (small_buffers shrinks it after the handshake:
    # the kernel then drops the broker's segments, window updates included, and the
    # client's sending can stall for minutes in zero-window probes).
    client = raw(broker, 5, receive_buffer=4096)
    client.connect("no-reader")
    small_server_buffers(broker)
    client.sock.setblocking(False)
    core = broker.broker.core
    pings = b"\xc0\x00" * 32_768  # each PINGREQ is answered with a PINGRESP of its size
    sent = 0
    deadline = time.monotonic() + 60
    # Send until the broker's writes back up. A pause in what the kernel accepts proves
    # nothing: its buffers hold megabytes the broker is still working through.
    while not core.blocked_writers:
        assert time.monotonic() < deadline, f"the broker kept reading: {sent} bytes accepted"
        try:
            sent += client.sock.send(pings)
        except BlockingIOError:
            threading.Event().wait(0.01)
    assert sent > WRITE_BUFFER_HIGH  # the broker had more to answer than it may buffer
    # It has stopped reading: it answers what it has read already (less than a PINGREQ
    # may be left), and no more.
    wait_until(lambda: input_state(broker)[1] < 2, what="the input already read handled")
    assert not input_state(broker)[0], "the broker reads a client whose writes backed up"
    # What the client sends now stays in the kernel, whose buffers fill and refuse more.
    while True:
        assert time.monotonic() < deadline, f"the kernel kept accepting: {sent} bytes accepted"
        try:
            sent += client.sock.send(pings)
        except BlockingIOError:
            break
    assert server_side_buffered(broker) <= WRITE_BUFFER_HIGH + 256 * 1024
    assert not input_state(broker)[0]
    assert core.blocked_writers


def test_a_client_stuck_past_the_stall_timeout_is_closed(make_broker, raw, clients) -> None:
    broker = make_broker(store="memory", write_stall_timeout=1)
    stuck = raw(broker, 5)
    small_buffers(stuck)
    stuck.connect("stuck")
    stuck.subscribe(1, [("flood", 0)])
    publisher = clients.connect(broker, "flooder")
    core = broker.broker.core
    payload = b"z" * 60_000
    # Publish until the broker sees the subscriber's writes back up, then until it closes it.
    wait_until(
        lambda: publisher.client.publish("flood", payload) and bool(core.blocked_writers),
        timeout=30,
        what="the subscriber's writes to back up",
    )
    wait_until(lambda: "stuck" not in core.connections, timeout=30, what="the stuck client closed")


def test_one_flooding_publisher_does_not_starve_other_clients(make_broker, raw, clients) -> None:
    broker = make_broker(store="memory")
    reader = clients.connect(broker, "reader")
    reader.sub("flood")
    not_reading = raw(broker, 4)
    small_buffers(not_reading)
    not_reading.connect("not-reading")
    not_reading.subscribe(1, [("flood", 0)])
    stop = threading.Event()
    flooder = raw(broker, 4)
    flooder.connect("flooder")
    burst = frame(0x30, utf8("flood") + b"m" * 20) * 2000

    def flood() -> None:
        while not stop.is_set():
            try:
                flooder.send(burst)
            except OSError:
                return

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(reader.messages) > 10_000, timeout=30, what="the flood to run")
        other = raw(broker, 4)
        started = time.monotonic()
        other.connect("other")
        connack_after = time.monotonic() - started
        pings = []
        for _ in range(5):
            started = time.monotonic()
            other.send(b"\xc0\x00")
            other.expect("PINGRESP")
            pings.append(time.monotonic() - started)
    finally:
        stop.set()
        thread.join(10)
    # Generous bounds for a loaded machine: without fairness these took 5-19 s.
    assert connack_after < 2.0, connack_after
    assert max(pings) < 1.0, pings


def test_a_client_still_sending_reads_the_disconnect_reason(make_broker, raw) -> None:
    broker = make_broker(store="memory", receive_maximum=5)
    client = raw(broker, 5)
    client.connect("over-the-limit")
    # QoS 2 PUBLISHes past Receive Maximum, never released, and the client keeps sending.
    burst = b"".join(
        frame(0x34, utf8("q2") + struct.pack("!H", n) + b"\x00" + b"x" * 100) for n in range(1, 400)
    )
    client.send(burst)
    for _ in range(20):
        try:
            client.send(frame(0x30, utf8("more") + b"y" * 1000))
        except OSError:
            break
    packets = client.wait_closed()
    disconnects = [p for p in packets if p.name == "DISCONNECT"]
    assert disconnects and disconnects[0].reason_code == 0x93, packets
