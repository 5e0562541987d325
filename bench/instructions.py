"""What a message costs Roost, in instructions (valgrind callgrind): machine-independent
figures for comparing two trees where the throughput benchmarks drown in the noise of a
shared machine. Needs ``valgrind`` (Debian package); slow (about a minute per run).

``PYTHONPATH=src .venv/bin/python -m bench.instructions relay [--messages 20480]``
``PYTHONPATH=src .venv/bin/python -m bench.instructions fanin --qos 1 [--messages 20480]``

``fanin``: one node (no cluster), 8 publishers at ``--qos`` (0 or 1; QoS 1 publishers read
their PUBACKs) and one QoS 0 subscriber; the node's instructions per message.

``fanout``: one node, one QoS 0 publisher and ``FANOUT_SUBSCRIBERS`` QoS 0 subscribers of
its topic; the node's instructions per delivery (``--messages`` counts deliveries).

``latency``: one node, one QoS 1 publisher and one QoS 1 subscriber of its topic, as in
``python -m bench latency``: the publisher writes ``LATENCY_BATCH`` messages at a time and
waits for their PUBACKs and deliveries, the subscriber acknowledges each batch in one write;
the node's instructions per message, with every poll, read and write of a quiet broker.

``relay``: the throughput ratio of ``python -m bench cluster-qos0`` (cross-node over
same-node) moves by 30% from round to round on a shared machine; instruction counts do
not. The same load (8 QoS 0 publishers on node A, 64-byte payloads, one subscriber, at
most 256 messages per publisher outstanding) runs through two nodes of a cluster under
callgrind, once with the subscriber on node B (**cross-node**: A reads and forwards, B
decodes and delivers) and once on node A (**same-node**: A reads and delivers, B idles).
``cross / same`` is the same-node instructions over the cross-node ones of A and B: the
throughput ratio one core would give if a Python instruction cost the same everywhere.
Redis (C, not under callgrind) is left out: it took 2-3% of the CPU of a cross-node run.

Each setup runs twice, with ``--messages`` and with a fifth of it; the figure per message
is the difference over the difference in messages, so start-up and idle work cancel out.
"""

from __future__ import annotations

import argparse
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import loadgen as lg
from bench.brokers import roost_python, src_env
from roost.cluster.localserver import LocalServer, free_port

PUBLISHERS = 8
FANOUT_SUBSCRIBERS = 100
LATENCY_BATCH = 3  # messages the latency scenario's publisher writes at a time
OUTSTANDING = 256  # messages per publisher between two waits for the subscriber
TOPIC = "bench/relay"
PAYLOAD = bytes(64)
PACKET = lg.publish_packet(TOPIC, PAYLOAD, 0)  # as the subscriber gets every message
START_TIMEOUT = 300.0  # seconds: Python under callgrind starts some 50x slower


@dataclass
class Node:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def log(self) -> str:
        return (self.directory / f"{self.name}.log").read_text(errors="replace")

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while text not in self.log:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(f"node {self.name}: no {text!r} in its log:\n{self.log[-2000:]}")
            time.sleep(0.2)

    def instructions(self) -> int:
        """Instructions so far (callgrind dumps on request), then the node is killed: a
        node stopped by SIGTERM under callgrind may take minutes to exit."""
        subprocess.run(
            ["callgrind_control", "-d", str(self.process.pid)],
            check=True,
            timeout=300,
            capture_output=True,
        )
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(60)
        totals = [
            int(found.group(1))
            for dump in self.directory.glob(f"{self.name}.callgrind*")
            if (found := re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M))
        ]
        return sum(totals)


def start_node(name: str, directory: Path, *arguments: str) -> Node:
    """``roost serve`` under callgrind (in-memory store) with ``arguments``."""
    port = free_port()
    out = (directory / f"{name}.log").open("wb")
    process = subprocess.Popen(
        [
            *("valgrind", "--tool=callgrind", "--dump-instr=no"),
            f"--callgrind-out-file={directory}/{name}.callgrind",
            *(roost_python(), "-m", "roost", "serve", "--host", "127.0.0.1", "--port", str(port)),
            *("--store", "memory", "--max-queued-messages", "100000", *arguments),
        ],
        env=dict(src_env(), PYTHONHASHSEED="0"),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return Node(name, port, process, directory)


def connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(START_TIMEOUT)
    sock.sendall(lg.connect_packet(client_id))
    read_exactly(sock, 4)  # CONNACK
    return sock


def read_exactly(sock: socket.socket, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        received += sock.recv(min(size - len(received), 1 << 20))
    return bytes(received)


def run_relay(cross: bool, messages: int) -> tuple[int, int]:
    """Instructions of nodes A and B for one run of ``messages`` messages."""
    with tempfile.TemporaryDirectory(prefix="roost-instructions-") as tmp:
        directory = Path(tmp)
        redis = LocalServer(directory / "redis").start()
        cluster = ["--cluster", redis.url, "--node-timeout-ms", "60000", "--log-level", "info"]
        nodes = [start_node(node_id, directory, "--node-id", node_id, *cluster) for node_id in "AB"]
        try:
            a, b = nodes
            a.wait_for("node B joined")
            b.wait_for("node A joined")
            subscriber = subscribe((b if cross else a).port)
            publishers = [connect(a.port, f"publisher-{n}") for n in range(PUBLISHERS)]
            wait_for_route(publishers[0], subscriber)
            publish(publishers, subscriber, messages, qos=0)
            return a.instructions(), b.instructions()
        finally:
            stop(nodes)
            redis.stop()


def run_fanin(qos: int, messages: int) -> int:
    """Instructions of a lone node for one run of ``messages`` messages."""
    with tempfile.TemporaryDirectory(prefix="roost-instructions-") as tmp:
        node = start_node("single", Path(tmp), "--log-level", "info")
        try:
            node.wait_for("roost listening on")
            subscriber = subscribe(node.port)
            publishers = [connect(node.port, f"publisher-{n}") for n in range(PUBLISHERS)]
            publish(publishers, subscriber, messages, qos)
            return node.instructions()
        finally:
            stop([node])


def run_fanout(deliveries: int) -> int:
    """Instructions of a lone node for ``deliveries`` deliveries of QoS 0 fan-out."""
    with tempfile.TemporaryDirectory(prefix="roost-instructions-") as tmp:
        node = start_node("single", Path(tmp), "--log-level", "info")
        try:
            node.wait_for("roost listening on")
            subscribers = [
                subscribe(node.port, f"subscriber-{n}") for n in range(FANOUT_SUBSCRIBERS)
            ]
            publisher = connect(node.port, "publisher")
            sent = 0
            while sent < deliveries:
                publisher.sendall(PACKET * OUTSTANDING)
                for subscriber in subscribers:
                    read_exactly(subscriber, len(PACKET) * OUTSTANDING)
                sent += OUTSTANDING * FANOUT_SUBSCRIBERS
            return node.instructions()
        finally:
            stop([node])


def run_latency(messages: int) -> int:
    """Instructions of a lone node for ``messages`` QoS 1 messages, a few at a time."""
    delivery_size = len(lg.publish_packet(TOPIC, PAYLOAD, 1, 1))
    packet_id_at = delivery_size - len(PAYLOAD) - 2
    with tempfile.TemporaryDirectory(prefix="roost-instructions-") as tmp:
        node = start_node("single", Path(tmp), "--log-level", "info")
        try:
            node.wait_for("roost listening on")
            subscriber = subscribe(node.port, qos=1)
            publisher = connect(node.port, "publisher")
            for first in range(0, messages, LATENCY_BATCH):
                ids = range(first % 60_000 + 1, first % 60_000 + 1 + LATENCY_BATCH)
                publisher.sendall(b"".join(lg.publish_packet(TOPIC, PAYLOAD, 1, i) for i in ids))
                read_exactly(publisher, 4 * LATENCY_BATCH)  # the PUBACKs
                deliveries = b"".join(read_exactly(subscriber, delivery_size) for _ in ids)
                subscriber.sendall(
                    b"".join(
                        b"\x40\x02" + deliveries[at + packet_id_at : at + packet_id_at + 2]
                        for at in range(0, len(deliveries), delivery_size)
                    )
                )
            return node.instructions()
        finally:
            stop([node])


def subscribe(port: int, client_id: str = "subscriber", qos: int = 0) -> socket.socket:
    subscriber = connect(port, client_id)
    subscriber.sendall(lg.subscribe_packet(1, [(TOPIC, qos)]))
    read_exactly(subscriber, 5)  # SUBACK
    return subscriber


def publish(
    publishers: list[socket.socket], subscriber: socket.socket, messages: int, qos: int
) -> None:
    """``messages`` in rounds of OUTSTANDING per publisher, each round received whole (and
    at QoS 1 acknowledged) before the next."""
    sent = 0
    while sent < messages:
        for publisher in publishers:
            if qos:
                ids = range(sent % 60_000 + 1, sent % 60_000 + 1 + OUTSTANDING)
                packets = [lg.publish_packet(TOPIC, PAYLOAD, 1, packet_id) for packet_id in ids]
                publisher.sendall(b"".join(packets))
            else:
                publisher.sendall(PACKET * OUTSTANDING)
        if qos:
            for publisher in publishers:
                read_exactly(publisher, 4 * OUTSTANDING)  # the PUBACKs
        read_exactly(subscriber, len(PACKET) * OUTSTANDING * len(publishers))
        sent += OUTSTANDING * len(publishers)


def stop(nodes: list[Node]) -> None:
    for node in nodes:
        if node.process.poll() is None:
            node.process.kill()


def wait_for_route(publisher: socket.socket, subscriber: socket.socket) -> None:
    """Publish one message at a time until one arrives (the route reached node A)."""
    subscriber.settimeout(1.0)
    while True:
        publisher.sendall(PACKET)
        try:
            read_exactly(subscriber, len(PACKET))
            break
        except TimeoutError:
            continue
    subscriber.settimeout(2.0)  # the probes still on their way
    try:
        while subscriber.recv(1 << 20):
            pass
    except TimeoutError:
        pass
    subscriber.settimeout(START_TIMEOUT)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("what", choices=["relay", "fanin", "fanout", "latency"])
    parser.add_argument("--qos", type=int, choices=[0, 1], default=0, help="fanin: publishers' QoS")
    parser.add_argument("--messages", type=int, default=20480)
    args = parser.parse_args()
    few = args.messages // 5
    count = args.messages - few
    if args.what == "fanout":
        per_delivery = (run_fanout(args.messages * 10) - run_fanout(few * 10)) / (count * 10)
        print(f"one node, QoS 0 fan-out: {per_delivery:,.0f} instructions per delivery")
        return
    if args.what == "latency":
        per_message = (run_latency(args.messages) - run_latency(few)) / count
        print(f"one node, QoS 1 a few at a time: {per_message:,.0f} instructions per message")
        return
    if args.what == "fanin":
        per_message = (run_fanin(args.qos, args.messages) - run_fanin(args.qos, few)) / count
        print(f"one node, QoS {args.qos} fan-in: {per_message:,.0f} instructions per message")
        return
    costs: dict[str, tuple[float, float]] = {}
    for name, cross in (("cross-node", True), ("same-node", False)):
        many_a, many_b = run_relay(cross, args.messages)
        few_a, few_b = run_relay(cross, few)
        costs[name] = ((many_a - few_a) / count, (many_b - few_b) / count)
        print(
            f"{name}: node A {costs[name][0]:,.0f}, node B {costs[name][1]:,.0f}"
            " instructions per message",
            flush=True,
        )
    cross_a, cross_b = costs["cross-node"]
    same_a, _ = costs["same-node"]
    print(f"cross / same: {same_a / (cross_a + cross_b):.3f}")


if __name__ == "__main__":
    main()
