"""The load generator: a minimal MQTT 3.1.1 client over asyncio, run in worker processes.

Design points:

* PUBLISH packets are encoded once, before the run; publishers write pre-joined blocks.
* Received data is framed by scanning the fixed header (type byte + remaining length) only;
  a PUBLISH is counted without being decoded. QoS 1 deliveries are acknowledged with the
  packet id sliced straight out of the buffer; latency samples read an 8-byte timestamp at
  a known payload offset. Timed subscribers (``timing``) put those delays in a histogram
  instead (``DELAY_BUCKET_NS`` wide buckets, bounded memory at millions of deliveries) and
  note the longest gap between two reads that brought deliveries.
* Workers are ``multiprocessing`` processes (spawn) pinned to the generator cores, uvloop
  when available. They share two arrays of int64 with the orchestrator: per-worker counters
  (``NSLOTS`` slots per worker, each written only by its worker) and control slots (the
  run phase, the measuring flag), so sampling a rate costs the workers nothing.
* Everything is bounded: connection attempts and handshakes have time-outs and a retry
  limit, every loop ends with the run phase, and the worker exits on its own when the
  orchestrator goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import ssl
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any, cast

HOST = "127.0.0.1"

# Per-worker counter slots.
BOOTED = 0  # 1 once the worker process is up and its data is built
READY = 1  # 1 once all its connections are set up (CONNACK, SUBACK)
CONNECTED = 2  # connections that got CONNACK
SENT = 3  # PUBLISH packets written by publishers
RECV = 4  # PUBLISH packets received by subscribers
ACKED = 5  # PUBACKs received by QoS 1 publishers
EXPECTED = 6  # deliveries the publishes written so far should cause
ERRORS = 7  # protocol errors, refused subscriptions, unexpected packets
CONN_FAIL = 8  # failed connection attempts (retried)
DROPPED = 9  # connections lost before the end of the run
STALLS = 10  # times a QoS 0 publisher gave up waiting for the window (loss suspected)
DONE = 11  # 1 once the worker has closed everything
NSLOTS = 12

# Control slots.
PHASE = 0
MEASURING = 1
NCTRL = 2

# Phases.
P_WAIT = 0  # workers boot and wait
P_SETUP = 1  # connect and subscribe
P_RUN = 2  # publish
P_STOP = 3  # stop publishing, keep receiving (drain)
P_EXIT = 4  # disconnect and exit

CONNECT_TIMEOUT = 30.0
CONNECT_ATTEMPTS = 3
STALL_SECONDS = 0.25  # a full delivery window without progress for this long is written off
WINDOW_POLL = 0.001  # uvloop rounds shorter timers to 0 ms, which would busy-spin
PING_INTERVAL = 25.0
PING_TICK = 0.1  # seconds between two slices of the pings
DELAY_BUCKET_NS = 10_000  # width of a delivery delay histogram bucket (0.01 ms)
MAX_ERRORS_KEPT = 20

Counters = Any  # multiprocessing.sharedctypes RawArray of c_longlong (no usable stub type)


# -- encoding ----------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def mqtt_str(value: str | bytes) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return len(data).to_bytes(2, "big") + data


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + varint(len(body)) + body


def connect_packet(client_id: str, keepalive: int = 60, clean: bool = True) -> bytes:
    header = mqtt_str("MQTT") + bytes([4, 0x02 if clean else 0x00]) + keepalive.to_bytes(2, "big")
    return packet(0x10, header + mqtt_str(client_id))


def subscribe_packet(packet_id: int, filters: Sequence[tuple[str, int]]) -> bytes:
    body = packet_id.to_bytes(2, "big") + b"".join(mqtt_str(f) + bytes([q]) for f, q in filters)
    return packet(0x82, body)


def publish_packet(topic: str, payload: bytes, qos: int = 0, packet_id: int = 0) -> bytes:
    body = mqtt_str(topic) + (packet_id.to_bytes(2, "big") if qos else b"") + payload
    return packet(0x30 | (qos << 1), body)


def publish_prefix(topic: str, payload_len: int, qos: int) -> bytes:
    """Fixed header and topic of a PUBLISH; for QoS > 0 the packet id follows, then the
    payload of ``payload_len`` bytes."""
    topic_b = mqtt_str(topic)
    remaining = len(topic_b) + (2 if qos else 0) + payload_len
    return bytes([0x30 | (qos << 1)]) + varint(remaining) + topic_b


DISCONNECT = b"\xe0\x00"
PINGREQ = b"\xc0\x00"


class MqttError(Exception):
    pass


# -- the worker's shared state -----------------------------------------------------------------


class Worker:
    """State of one worker process: its slot of the shared counters and its connections."""

    def __init__(
        self,
        wid: int,
        nworkers: int,
        counters: Counters,
        ctrl: Counters,
        port: int,
        tls: ssl.SSLContext | None = None,
    ):
        self.wid = wid
        self.nworkers = nworkers
        self.counters = counters
        self.ctrl = ctrl
        self.port = port
        self.tls = tls  # connect with TLS (to the worker's own port), verifying the broker
        self.base = wid * NSLOTS
        self.conns: list[Conn] = []
        self.latencies: list[int] = []
        self.delays: dict[int, int] = {}  # timed subscribers: delay bucket -> deliveries
        self.errors: list[str] = []
        self.probe: Probe | None = None
        self.credit = 0  # deliveries written off as lost by stalled publishers
        # Delivery windows count this worker's own counters only (its publishers and
        # subscribers form a workload of their own, e.g. one per cluster node).
        self.local_window = False
        self.last_recv = -1
        self.stall_since = time.monotonic()
        self.connect_started = 0.0
        self.connect_done = 0.0
        self.loop = asyncio.get_running_loop()

    def add(self, slot: int, n: int = 1) -> None:
        self.counters[self.base + slot] += n

    def total(self, slot: int) -> int:
        c = self.counters
        return sum(c[w * NSLOTS + slot] for w in range(self.nworkers))

    def phase(self) -> int:
        return int(self.ctrl[PHASE])

    def delivery_room(self, window: int) -> int:
        """Deliveries that may still be started under a run-wide ``window`` of outstanding
        ones (expected minus received, over all workers). If deliveries make no progress
        for ``STALL_SECONDS`` while the window is full, what is outstanding is written off
        (counted in STALLS) so that a broker that drops messages does not freeze the run;
        the loss still shows in the final counts. With ``local_window`` only this worker's
        counters count."""
        if self.local_window:
            received = self.counters[self.base + RECV]
            expected = self.counters[self.base + EXPECTED]
        else:
            received, expected = self.total(RECV), self.total(EXPECTED)
        room = window - (expected - received - self.credit)
        if room > 0:
            return room
        now = time.monotonic()
        if received != self.last_recv:
            self.last_recv = received
            self.stall_since = now
        elif now - self.stall_since > STALL_SECONDS:
            self.credit += window - room
            self.add(STALLS)
            self.stall_since = now
        return room

    def note(self, message: str) -> None:
        self.add(ERRORS)
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)

    async def wait_phase(self, phase: int) -> None:
        ppid = os.getppid()
        while self.ctrl[PHASE] < phase:
            if os.getppid() != ppid:  # orchestrator gone: give up
                raise SystemExit(1)
            await asyncio.sleep(0.005)


# -- the connection ------------------------------------------------------------------------------


class Conn(asyncio.Protocol):
    """One MQTT connection. Control packets (CONNACK, SUBACK) resolve ``waiter``; PUBLISH
    and PUBACK are counted on the fast path."""

    def __init__(self, worker: Worker, latency: bool = False, timing: bool = False) -> None:
        self.w = worker
        self.latency = latency or timing
        self.timing = timing  # delays into a histogram, longest gap between reads
        self.last_read = 0  # perf_counter_ns of the last read with a PUBLISH (timing)
        self.max_gap = 0  # longest gap between two such reads while measuring (timing)
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed: asyncio.Future[None] = worker.loop.create_future()
        self.paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.publisher: Qos1Publisher | None = None
        self.expect_close = False
        self.ping_waiter: asyncio.Future[None] | None = None  # a probe's PINGREQ

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.expect_close and self.w.phase() < P_EXIT:
            self.w.add(DROPPED)
            self.w.note(f"connection lost during the run: {exc!r}")
        if not self.closed.done():
            self.closed.set_result(None)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(MqttError(f"connection lost: {exc!r}"))
        self._wake_drain()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self.drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.drain_waiter = None

    async def drain(self) -> None:
        if self.paused and not self.closed.done():
            self.drain_waiter = self.w.loop.create_future()
            await self.drain_waiter

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        n = len(buf)
        i = 0
        pubs = 0
        acks = 0
        out: list[bytes] | None = None
        lat = self.latency
        now = time.perf_counter_ns() if lat else 0
        stamps: list[bytes] | None = [] if self.timing and self.w.ctrl[MEASURING] else None
        while n - i >= 2:
            b1 = buf[i + 1]
            if b1 < 0x80:
                h = 2
                end = i + 2 + b1
            else:
                length = b1 & 0x7F
                shift = 7
                j = i + 2
                complete = False
                while j < n and j < i + 5:
                    byte = buf[j]
                    j += 1
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if byte < 0x80:
                        complete = True
                        break
                if not complete:
                    if j >= i + 5:
                        self.w.note("malformed remaining length from the broker")
                        assert self.transport is not None
                        self.transport.abort()
                        return
                    break
                h = j - i
                end = j + length
            if end > n:
                break
            first = buf[i]
            if first & 0xF0 == 0x30:
                pubs += 1
                if first & 0x06 or lat:
                    p = i + h
                    p += 2 + ((buf[p] << 8) | buf[p + 1])
                    if first & 0x06:
                        if out is None:
                            out = []
                        out.append(b"\x40\x02" + buf[p : p + 2])
                        p += 2
                    if stamps is not None:
                        stamps.append(buf[p : p + 8])
                    elif lat and self.w.ctrl[MEASURING]:
                        self.w.latencies.append(now - int.from_bytes(buf[p : p + 8], "big"))
            elif first == 0x40:
                acks += 1
            else:
                self._control(first, buf[i + h : end])
            i = end
        self.buf = buf[i:] if i < n else b""
        if pubs:
            self.w.add(RECV, pubs)
            if self.timing:
                self._timed(now, stamps)
            if out and self.transport is not None:
                self.transport.write(b"".join(out))
        if acks:
            self.w.add(ACKED, acks)
            if self.publisher is not None:
                self.publisher.on_acks(acks)

    def _timed(self, now: int, stamps: list[bytes] | None) -> None:
        """Note the gap since the last read with deliveries and (while measuring) the
        delay of each delivery; a publisher stamps whole batches, so equal stamps come in
        runs and are counted once per run."""
        if stamps is not None:
            if self.last_read and now - self.last_read > self.max_gap:
                self.max_gap = now - self.last_read
            delays = self.w.delays
            last = b""
            run = 0
            for stamp in stamps:
                if stamp != last:
                    if run:
                        key = (now - int.from_bytes(last, "big")) // DELAY_BUCKET_NS
                        delays[key] = delays.get(key, 0) + run
                    last = stamp
                    run = 0
                run += 1
            if run:
                key = (now - int.from_bytes(last, "big")) // DELAY_BUCKET_NS
                delays[key] = delays.get(key, 0) + run
        self.last_read = now

    def _control(self, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind in (0x20, 0x90, 0xB0):  # CONNACK, SUBACK, UNSUBACK
            waiter = self.waiter
            if waiter is not None and not waiter.done():
                self.waiter = None
                waiter.set_result((first, body))
            else:
                self.w.note(f"unexpected packet 0x{first:02x}")
        elif kind == 0xD0:  # PINGRESP
            pong = self.ping_waiter
            if pong is not None and not pong.done():
                self.ping_waiter = None
                pong.set_result(None)
        else:
            self.w.note(f"unexpected packet 0x{first:02x}")

    # handshakes
    async def request(self, data: bytes, timeout: float = CONNECT_TIMEOUT) -> tuple[int, bytes]:
        assert self.transport is not None
        waiter: asyncio.Future[tuple[int, bytes]] = self.w.loop.create_future()
        self.waiter = waiter
        self.transport.write(data)
        return await asyncio.wait_for(waiter, timeout)

    async def subscribe(self, filters: Sequence[tuple[str, int]], packet_id: int = 1) -> None:
        first, body = await self.request(subscribe_packet(packet_id, filters))
        if first != 0x90 or len(body) != 2 + len(filters):
            raise MqttError(f"bad SUBACK 0x{first:02x} {body!r}")
        for (topic_filter, _), code in zip(filters, body[2:], strict=True):
            if code == 0x80:
                self.w.note(f"subscription to {topic_filter!r} refused")

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    async def close(self, timeout: float) -> None:
        """DISCONNECT and wait for the broker to close (TIME_WAIT stays on its side)."""
        self.expect_close = True
        transport = self.transport
        if transport is None or self.closed.done():
            return
        if not transport.is_reading():  # a stalled reader would never see the close
            transport.abort()
            return
        if not transport.is_closing():
            transport.write(DISCONNECT)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        if not self.closed.done():
            transport.abort()


async def _connected_from(w: Worker, source: str, port: int) -> socket.socket:
    """A socket connected to ``port`` from ``source``. The local port is chosen at
    connect time (IP_BIND_ADDRESS_NO_PORT), not by ``bind``, whose search for a free port
    slows down as thousands are taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        await w.loop.sock_connect(sock, (HOST, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def open_conn(
    w: Worker,
    client_id: str,
    keepalive: int,
    latency: bool = False,
    timeout: float = 30.0,
    clean: bool = True,
    port: int = 0,
    timing: bool = False,
    source: str | None = None,
) -> Conn:
    """Connect to ``port`` (default: the worker's broker port), from local address
    ``source`` if given (each source address has its own ephemeral ports)."""

    async def connect() -> Conn:
        tls = None if port else w.tls
        if source is None:
            _, made = await w.loop.create_connection(
                lambda: Conn(w, latency, timing), HOST, port or w.port, ssl=tls
            )
        else:
            sock = await _connected_from(w, source, port or w.port)
            _, made = await w.loop.create_connection(
                lambda: Conn(w, latency, timing),
                sock=sock,
                ssl=tls,
                server_hostname=HOST if tls else None,
            )
        return made

    conn = await asyncio.wait_for(connect(), timeout)
    try:
        first, body = await conn.request(connect_packet(client_id, keepalive, clean), timeout)
        if first != 0x20 or len(body) != 2 or body[1] != 0:
            raise MqttError(f"connection refused: 0x{first:02x} {body!r}")
    except BaseException:
        if conn.transport is not None:
            conn.expect_close = True
            conn.transport.abort()
        raise
    w.add(CONNECTED)
    return conn


async def connect_many(
    w: Worker,
    client_ids: Sequence[str],
    keepalive: int,
    filters: Callable[[int], list[tuple[str, int]]] | None,
    sem: asyncio.Semaphore,
    latency: bool = False,
    clean: bool = True,
    port: int = 0,
    timing: bool = False,
    source: str | None = None,
) -> list[Conn]:
    """Connect (and subscribe) every client id, at most ``sem`` at a time, each with a
    bounded number of attempts. Failed clients are reported and left out."""

    async def one(index: int) -> Conn | None:
        async with sem:
            last: BaseException | None = None
            for attempt in range(CONNECT_ATTEMPTS):
                try:
                    conn = await open_conn(
                        w,
                        client_ids[index],
                        keepalive,
                        latency,
                        clean=clean,
                        port=port,
                        timing=timing,
                        source=source,
                    )
                # RuntimeError: uvloop's, for a write to a transport the broker closed
                # already (e.g. a broker out of file descriptors accepts and closes at once)
                except (TimeoutError, OSError, MqttError, RuntimeError) as exc:
                    last = exc
                    w.add(CONN_FAIL)
                    await asyncio.sleep(0.1 * (attempt + 1))
                    continue
                try:
                    if filters is not None:
                        await conn.subscribe(filters(index))
                except (TimeoutError, OSError, MqttError) as exc:
                    w.note(f"subscribe failed for {client_ids[index]}: {exc!r}")
                    await conn.close(1.0)
                    return None
                w.conns.append(conn)  # pinged from now on
                return conn
            w.note(f"could not connect {client_ids[index]}: {last!r}")
            return None

    results = await asyncio.gather(*(one(i) for i in range(len(client_ids))))
    return [c for c in results if c is not None]


# -- publishers -------------------------------------------------------------------------------


async def run_qos0_publisher(
    w: Worker,
    conn: Conn,
    batches: Sequence[tuple[bytes, int, int]],
    window: int,
    stamp: tuple[bytes, bytes] | None = None,
    rate: float = 0.0,
) -> None:
    """Write pre-encoded batches (data, messages, expected deliveries) in a loop.

    With ``window`` > 0 the publisher keeps at most ``window`` deliveries outstanding over
    all publishers of the run (see ``Worker.delivery_room``), so the broker rather than
    socket buffers sets the pace. With ``rate`` > 0 (messages/s) a batch is written when
    the schedule says so, never ahead of it. With ``stamp`` = (PUBLISH prefix, payload
    after the stamp) every batch is instead that many packets whose payload starts with
    the time of the write (``time.perf_counter_ns``).
    """
    await w.wait_phase(P_RUN)
    index = 0
    nbatches = len(batches)
    started = time.monotonic()
    sent = 0
    while w.phase() < P_STOP and not conn.closed.done():
        if window and w.delivery_room(window) <= 0:
            await asyncio.sleep(WINDOW_POLL)
            continue
        if rate and (ahead := sent / rate - (time.monotonic() - started)) > 0:
            await asyncio.sleep(ahead)
            continue
        data, messages, expected = batches[index]
        index += 1
        if index == nbatches:
            index = 0
        if stamp is not None:
            data = (stamp[0] + time.perf_counter_ns().to_bytes(8, "big") + stamp[1]) * messages
        conn.write(data)
        w.add(SENT, messages)
        w.add(EXPECTED, expected)
        sent += messages
        if conn.paused:
            await conn.drain()
        else:
            await asyncio.sleep(0)


class Qos1Publisher:
    """QoS 1 publishing with at most ``window`` unacknowledged PUBLISH packets.

    Without a rate the window is refilled (a quarter window at a time) as PUBACKs arrive;
    with ``rate`` (msgs/s) a ticker releases messages on schedule. ``delivery_window`` > 0
    additionally caps the deliveries outstanding over all publishers of the run (published
    minus received by the subscribers), because a broker acknowledges a QoS 1 PUBLISH when it
    has accepted it, not when it has delivered it, and would otherwise queue without bound.
    ``stamped`` publishers put the send time (``time.perf_counter_ns``) in the first 8
    payload bytes.
    """

    def __init__(
        self,
        w: Worker,
        conn: Conn,
        topic: str,
        payload_size: int,
        window: int,
        fanout: int = 1,
        rate: float = 0.0,
        stamped: bool = False,
        table: list[bytes] | None = None,
        delivery_window: int = 0,
    ) -> None:
        self.w = w
        self.delivery_window = delivery_window
        # Refill in chunks: one write per quarter window, not one per PUBACK.
        self.min_batch = 1 if rate else max(1, window // 4)
        self.conn = conn
        self.window = window
        self.fanout = fanout
        self.rate = rate
        self.stamped = stamped
        self.prefix = publish_prefix(topic, payload_size, 1)
        self.pad = bytes(max(0, payload_size - 8))
        self.table = table
        self.packet_id = 1
        self.inflight = 0
        self.sent = 0
        self.started = 0.0
        self.running = False
        conn.publisher = self

    @staticmethod
    def build_table(topic: str, payload_size: int) -> list[bytes]:
        prefix = publish_prefix(topic, payload_size, 1)
        payload = bytes(payload_size)
        return [prefix + pid.to_bytes(2, "big") + payload for pid in range(1, 65536)]

    def fill(self) -> None:
        if not self.running:
            return
        if self.w.phase() >= P_STOP:
            self.running = False
            return
        free = self.window - self.inflight
        if self.rate:
            due = int(self.rate * (time.monotonic() - self.started)) - self.sent
            free = min(free, due)
        if self.delivery_window:
            free = min(free, self.w.delivery_room(self.delivery_window) // self.fanout)
        if free <= 0 or (free < self.min_batch and self.inflight):
            return
        pid = self.packet_id
        parts = []
        if self.stamped:
            prefix, pad = self.prefix, self.pad
            stamp = time.perf_counter_ns().to_bytes(8, "big")
            for _ in range(free):
                parts.append(prefix + pid.to_bytes(2, "big") + stamp + pad)
                pid = pid + 1 if pid < 65535 else 1
        else:
            table = self.table
            assert table is not None
            for _ in range(free):
                parts.append(table[pid - 1])
                pid = pid + 1 if pid < 65535 else 1
        self.packet_id = pid
        self.inflight += free
        self.sent += free
        self.w.add(SENT, free)
        self.w.add(EXPECTED, free * self.fanout)
        self.conn.write(b"".join(parts) if free > 1 else parts[0])

    def on_acks(self, n: int) -> None:
        self.inflight -= n
        if not self.rate:
            self.fill()

    async def run(self) -> None:
        await self.w.wait_phase(P_RUN)
        self.started = time.monotonic()
        self.running = True
        self.fill()
        # Between PUBACKs, a ticker covers the rate schedule and the delivery window.
        while self.running and not self.conn.closed.done():
            await asyncio.sleep(WINDOW_POLL)
            self.fill()


# -- the responsiveness probe ---------------------------------------------------------------------


class Probe:
    """Times how fast the broker answers a client that is not part of the load: a PINGREQ
    on an open connection (the next one ``ping_interval`` after the last answer), and a
    new TCP connect + CONNECT until its CONNACK (every ``connect_interval``).

    Only requests sent while the run is measuring count. The probe sends no more once the
    measurement is over, but waits for the answers still due until the load stops; one
    still unanswered then counts with the time it has waited (a lower bound) and in
    ``unanswered``."""

    def __init__(
        self, w: Worker, conn: Conn, prefix: str, ping_interval: float, connect_interval: float
    ) -> None:
        self.w = w
        self.conn = conn  # the connection that pings
        self.prefix = prefix
        self.ping_interval = ping_interval
        self.connect_interval = connect_interval
        self.pings: list[int] = []  # ns
        self.connects: list[int] = []  # ns
        self.unanswered = {"pings": 0, "connects": 0}
        self.measured = False

    def over(self) -> bool:
        """True once the measurement window has opened and closed again (or the run ended)."""
        if self.w.ctrl[MEASURING]:
            self.measured = True
        return (self.measured and not self.w.ctrl[MEASURING]) or self.w.phase() >= P_STOP

    async def timed(self, what: str, answer: asyncio.Future[Any]) -> None:
        """Wait for ``answer`` until it comes or the load stops; keep its delay if the
        request went out while measuring."""
        start = time.perf_counter_ns()
        counted = bool(self.w.ctrl[MEASURING])
        while not answer.done() and self.w.phase() < P_STOP:
            await asyncio.wait({answer}, timeout=0.05)
        if counted:
            getattr(self, what).append(time.perf_counter_ns() - start)
            if not answer.done():
                self.unanswered[what] += 1
        if not answer.done():
            answer.cancel()
        elif not answer.cancelled() and answer.exception() is not None:
            self.w.note(f"probe: {what} failed: {answer.exception()!r}")

    async def ping_loop(self) -> None:
        await self.w.wait_phase(P_RUN)
        while not self.over():
            waiter: asyncio.Future[None] = self.w.loop.create_future()
            self.conn.ping_waiter = waiter
            self.conn.write(PINGREQ)
            await self.timed("pings", waiter)
            await asyncio.sleep(self.ping_interval)

    async def connect_loop(self) -> None:
        await self.w.wait_phase(P_RUN)
        n = 0
        while not self.over():
            n += 1
            attempt = asyncio.ensure_future(open_conn(self.w, f"{self.prefix}c{n}", 60))
            await self.timed("connects", attempt)
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                await attempt.result().close(1.0)
            await asyncio.sleep(self.connect_interval)

    async def run(self) -> None:
        """Probe until the measurement is over. The pinging connection is the probe's own
        (not in ``Worker.conns``: the keep-alive pinger would add PINGRESPs it did not ask
        for)."""
        try:
            await asyncio.gather(self.ping_loop(), self.connect_loop())
        finally:
            await self.conn.close(1.0)

    def report(self) -> dict[str, Any]:
        return {"pings": self.pings, "connects": self.connects, "unanswered": self.unanswered}


# -- roles and the worker entry point -------------------------------------------------------------


async def _pinger(w: Worker) -> None:
    """A PINGREQ on every connection once per PING_INTERVAL, spread over the interval (a
    slice of the connections every PING_TICK), as clients that connected at different
    moments ping: 100k at once would be a burst no real load has."""
    ticks = int(PING_INTERVAL / PING_TICK)
    tick = 0
    while True:
        await asyncio.sleep(PING_TICK)
        if w.phase() >= P_EXIT:
            return
        conns = w.conns
        for conn in conns[tick * len(conns) // ticks : (tick + 1) * len(conns) // ticks]:
            conn.write(PINGREQ)
        tick = (tick + 1) % ticks


async def _setup_role(
    w: Worker, role: dict[str, Any], sem: asyncio.Semaphore, tasks: list[Any]
) -> None:
    kind = role["role"]
    prefix = f"{role.get('prefix', kind)}{w.wid}-"
    n = int(role["n"])
    ids = [f"{prefix}{i}" for i in range(n)]
    keepalive = int(role.get("keepalive", 60))
    port = int(role.get("port", 0))  # another broker than the run's (cluster nodes)
    if role.get("local_window"):
        w.local_window = True
    if kind in ("sub", "idle"):
        per_conn: list[list[str]] | None = role.get("filters_per_conn")
        shared: list[str] = role.get("filters", [])
        qos = int(role.get("qos", 0))

        def filters(index: int) -> list[tuple[str, int]]:
            chosen = per_conn[index] if per_conn is not None else shared
            return [(f, qos) for f in chosen]

        conns = await connect_many(
            w,
            ids,
            keepalive,
            filters if kind == "sub" else None,
            sem,
            latency=bool(role.get("latency")),
            clean=bool(role.get("clean", True)),
            port=port,
            timing=bool(role.get("timing")),
            source=role.get("source"),
        )
        if role.get("stalled"):  # subscribed, but never reads again
            for conn in conns:
                assert conn.transport is not None
                conn.transport.pause_reading()
    elif kind == "probe":
        conn = await open_conn(w, f"{prefix}ping", keepalive)
        w.probe = Probe(w, conn, prefix, role["ping_interval"], role["connect_interval"])
        tasks.append(w.probe.run())
    elif kind == "pub0":
        conns = await connect_many(w, ids, keepalive, None, sem, port=port)
        batches = role["batches"]
        for k, conn in enumerate(conns):
            # Start publishers at different points of the batch list.
            offset = (k * len(batches)) // max(1, len(conns))
            rotated = list(batches[offset:]) + list(batches[:offset])
            window = int(role.get("window", 0))
            stamp, rate = role.get("stamp"), float(role.get("rate", 0.0))
            tasks.append(run_qos0_publisher(w, conn, rotated, window, stamp, rate))
    elif kind == "pub1":
        conns = await connect_many(w, ids, keepalive, None, sem, port=port)
        stamped = bool(role.get("stamped"))
        table = None if stamped else Qos1Publisher.build_table(role["topic"], role["payload"])
        for conn in conns:
            pub = Qos1Publisher(
                w,
                conn,
                role["topic"],
                int(role["payload"]),
                int(role["window"]),
                fanout=int(role.get("fanout", 1)),
                rate=float(role.get("rate", 0.0)),
                stamped=stamped,
                table=table,
                delivery_window=int(role.get("delivery_window", 0)),
            )
            tasks.append(pub.run())
    else:
        raise ValueError(f"unknown role {kind!r}")


async def _worker_async(
    wid: int,
    nworkers: int,
    port: int,
    roles: list[dict[str, Any]],
    counters: Counters,
    ctrl: Counters,
    concurrency: int,
    cafile: str | None = None,
) -> dict[str, Any]:
    tls = ssl.create_default_context(cafile=cafile) if cafile else None
    w = Worker(wid, nworkers, counters, ctrl, port, tls)
    w.add(BOOTED)
    await w.wait_phase(P_SETUP)
    sem = asyncio.Semaphore(concurrency)
    tasks: list[Any] = []
    w.connect_started = time.monotonic()
    # Pings from the start: a connect storm of 100k clients outlasts their keep alive.
    pinger = asyncio.ensure_future(_pinger(w))
    # Subscribers (and idle clients) first, then publishers.
    ordered = sorted(roles, key=lambda r: 0 if r["role"] in ("sub", "idle") else 1)
    for role in ordered:
        await _setup_role(w, role, sem, tasks)
    w.connect_done = time.monotonic()
    w.add(READY)
    running = [asyncio.ensure_future(t) for t in tasks]
    await w.wait_phase(P_EXIT)
    pinger.cancel()
    for task in running:
        task.cancel()
    outcomes = await asyncio.gather(pinger, *running, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, asyncio.CancelledError):
            w.note(f"task failed: {outcome!r}")
    # Disconnect in bounded chunks so 10k connections do not all close at once.
    for start in range(0, len(w.conns), 500):
        chunk = w.conns[start : start + 500]
        await asyncio.gather(*(c.close(2.0) for c in chunk))
    w.add(DONE)
    return {
        "wid": wid,
        "pid": os.getpid(),
        "connections": len(w.conns),
        "latencies": w.latencies,
        "delays": w.delays,
        "gaps": [c.max_gap for c in w.conns if c.timing],  # each timed one's longest gap
        "errors": w.errors,
        "probe": w.probe.report() if w.probe is not None else None,
        "connect_seconds": w.connect_done - w.connect_started,
    }


def worker_main(
    wid: int,
    nworkers: int,
    port: int,
    roles: list[dict[str, Any]],
    counters: Counters,
    ctrl: Counters,
    results: Any,
    cpus: set[int],
    concurrency: int,
    cafile: str | None = None,
) -> None:
    """Entry point of a worker process (multiprocessing, spawn)."""
    from bench.brokers import raise_nofile

    # Ctrl-C is the orchestrator's business: it stops the run and then the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, cpus)
    raise_nofile()
    try:
        import uvloop

        run: Callable[..., Any] = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        result = run(_worker_async(wid, nworkers, port, roles, counters, ctrl, concurrency, cafile))
    except BaseException as exc:
        result = {
            "wid": wid,
            "pid": os.getpid(),
            "fatal": f"{exc!r}\n{traceback.format_exc()}",
            "latencies": [],
            "errors": [],
        }
        counters[wid * NSLOTS + ERRORS] += 1
        counters[wid * NSLOTS + DONE] = 1
    results.put(result)
