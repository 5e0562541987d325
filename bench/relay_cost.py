"""What a cross-node QoS 0 message costs the nodes, in instructions (valgrind callgrind).

``PYTHONPATH=src .venv/bin/python -m bench.relay_cost [--messages 20480]``

The throughput ratio of ``python -m bench cluster-qos0`` (cross-node / same-node) moves by
±30% from round to round on a shared machine; instruction counts do not. This runs the
same load (8 QoS 0 publishers on node A, 64-byte payloads, one subscriber; 256 messages
per publisher outstanding at most) through two nodes of a cluster started under
callgrind, once with the subscriber on node B (**cross-node**: A reads and forwards, B
decodes and delivers) and once on node A (**same-node**: A reads and delivers, B idles),
and reports the instructions each node spent per message. Each setup runs twice, with
``--messages`` and with a fifth of it, and the per-message figure is the difference over
the difference in messages, so start-up and idle work cancel out. Redis (C, not under
callgrind) is left out: it took 2-3% of the CPU of a cross-node run.

``cross / same`` is the same-node instructions over the cross-node ones of A and B: the
throughput ratio a core would give if a Python instruction cost the same everywhere.
Needs ``valgrind`` (Debian package); slow (about a minute per run).
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
OUTSTANDING = 256  # messages per publisher between two waits for the subscriber
TOPIC = "bench/relay"
PACKET = lg.publish_packet(TOPIC, bytes(64), 0)
START_TIMEOUT = 300.0  # seconds: Python under callgrind starts some 50x slower


@dataclass
class Node:
    node_id: str
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @property
    def log(self) -> str:
        return (self.directory / f"{self.node_id}.log").read_text(errors="replace")

    def wait_for(self, text: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while text not in self.log:
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise SystemExit(
                    f"node {self.node_id}: no {text!r} in its log:\n{self.log[-2000:]}"
                )
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
            for dump in self.directory.glob(f"{self.node_id}.callgrind*")
            if (found := re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M))
        ]
        return sum(totals)


def start_node(node_id: str, redis_url: str, directory: Path) -> Node:
    port = free_port()
    out = (directory / f"{node_id}.log").open("wb")
    process = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--dump-instr=no",
            f"--callgrind-out-file={directory}/{node_id}.callgrind",
            roost_python(),
            "-m",
            "roost",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--cluster",
            redis_url,
            "--node-id",
            node_id,
            "--node-timeout-ms",
            "60000",
            "--log-level",
            "info",
            "--store",
            "memory",
            "--max-queued-messages",
            "100000",
        ],
        env=dict(src_env(), PYTHONHASHSEED="0"),
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    return Node(node_id, port, process, directory)


def connect(port: int, client_id: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.settimeout(START_TIMEOUT)
    sock.sendall(lg.connect_packet(client_id))
    read_exactly(sock, 4)  # CONNACK
    return sock


def read_exactly(sock: socket.socket, size: int) -> None:
    while size:
        size -= len(sock.recv(min(size, 1 << 20)))


def run(cross: bool, messages: int) -> tuple[int, int]:
    """Instructions of nodes A and B for one run of ``messages`` messages."""
    with tempfile.TemporaryDirectory(prefix="roost-relay-cost-") as tmp:
        directory = Path(tmp)
        redis = LocalServer(directory / "redis").start()
        nodes = [start_node(node_id, redis.url, directory) for node_id in "AB"]
        try:
            a, b = nodes
            a.wait_for("node B joined")
            b.wait_for("node A joined")
            subscriber = connect((b if cross else a).port, "subscriber")
            subscriber.sendall(lg.subscribe_packet(1, [(TOPIC, 0)]))
            read_exactly(subscriber, 5)  # SUBACK
            publishers = [connect(a.port, f"publisher-{n}") for n in range(PUBLISHERS)]
            wait_for_route(publishers[0], subscriber)
            sent = 0
            while sent < messages:
                for publisher in publishers:
                    publisher.sendall(PACKET * OUTSTANDING)
                read_exactly(subscriber, len(PACKET) * OUTSTANDING * PUBLISHERS)
                sent += OUTSTANDING * PUBLISHERS
            return a.instructions(), b.instructions()
        finally:
            for node in nodes:
                if node.process.poll() is None:
                    node.process.kill()
            redis.stop()


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
    parser = argparse.ArgumentParser(prog="python -m bench.relay_cost", description=__doc__)
    parser.add_argument("--messages", type=int, default=20480)
    args = parser.parse_args()
    few = args.messages // 5
    per_message: dict[str, tuple[float, float]] = {}
    for name, cross in (("cross-node", True), ("same-node", False)):
        many_a, many_b = run(cross, args.messages)
        few_a, few_b = run(cross, few)
        count = args.messages - few
        per_message[name] = ((many_a - few_a) / count, (many_b - few_b) / count)
        print(
            f"{name}: node A {per_message[name][0]:,.0f}, node B {per_message[name][1]:,.0f}"
            " instructions per message",
            flush=True,
        )
    cross_a, cross_b = per_message["cross-node"]
    same_a, _ = per_message["same-node"]
    print(f"cross / same: {same_a / (cross_a + cross_b):.3f}")


if __name__ == "__main__":
    main()
