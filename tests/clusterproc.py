"""Real cluster nodes for tests: ``roost serve --cluster`` processes sharing one real
Valkey/Redis server (the ``redis_server`` fixture), each on its own ephemeral port."""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

from brokerproc import BrokerProcess
from paho_helpers import TIMEOUT, Clients, Conn, wait_until
from roost.cluster.localserver import LocalServer

# Short, so that tests see deaths and cut-offs quickly; long enough that a node starved of
# CPU by a parallel test run is not taken for dead (it would close its clients).
NODE_TIMEOUT_MS = 2000


class Cluster:
    """Nodes ``n0``, ``n1`` ... of one cluster."""

    def __init__(self, redis_server: LocalServer, directory: Path) -> None:
        self.redis_server = redis_server
        self.directory = directory
        self.nodes: list[BrokerProcess] = []

    def start(self, count: int, *extra: str) -> list[BrokerProcess]:
        """Start ``count`` more nodes, each once it has joined; returns all nodes."""
        for _ in range(count):
            self.add_node(f"n{len(self.nodes)}", *extra)
        self.wait_all_joined()
        return self.nodes

    def add_node(self, node_id: str, *extra: str) -> BrokerProcess:
        node = BrokerProcess(self.directory / node_id, *self.arguments(node_id), *extra)
        self.nodes.append(node.start())
        return node

    def arguments(self, node_id: str) -> list[str]:
        return [
            "--cluster", self.redis_server.url,
            "--node-id", node_id,
            "--node-timeout-ms", str(NODE_TIMEOUT_MS),
        ]  # fmt: skip

    def wait_all_joined(self) -> None:
        """Every node sees every other (its log says so)."""
        names = {f"node {node_id}" for node_id in self.node_ids()}

        def joined(node: BrokerProcess) -> bool:
            text = "".join(node.log)
            return all(name in text for name in names if name != f"node {self.node_id_of(node)}")

        wait_until(lambda: all(joined(node) for node in self.nodes), what="nodes to join")

    def node_ids(self) -> list[str]:
        return [f"n{index}" for index in range(len(self.nodes))]

    def node_id_of(self, node: BrokerProcess) -> str:
        return f"n{self.nodes.index(node)}"

    def stop_all(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.kill()


def wait_for_log(node: BrokerProcess, text: str, timeout: float = TIMEOUT) -> None:
    """Wait for ``text`` in the node's log; on a time-out the failure shows the log's last
    lines, the evidence of what the node did instead."""
    try:
        wait_until(lambda: text in "".join(node.log), timeout, what=f"{text!r} in the log")
    except AssertionError as exc:
        tail = "".join(node.log[-60:])
        raise AssertionError(f"{exc}; the node's last log lines:\n{tail}") from None


def wait_routed(
    clients: Clients, publisher_node: Any, subscriber: Conn, topic: str, timeout: float = TIMEOUT
) -> None:
    """Publish probes on ``topic`` from ``publisher_node`` until ``subscriber`` gets one:
    its subscription is then known there (route tables are updated asynchronously).
    Probe payloads start with ``probe-``."""
    probe = clients.connect(publisher_node, f"probe-{uuid.uuid4().hex[:8]}")
    deadline = time.monotonic() + timeout
    try:
        while True:
            payload = f"probe-{uuid.uuid4().hex}".encode()
            probe.pub(topic, payload, qos=1)
            with contextlib.suppress(AssertionError):
                subscriber.wait_for_payload(payload, timeout=0.2)
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} not routed to the subscriber in {timeout}s")
    finally:
        probe.stop()


def without_probes(payloads: list[bytes]) -> list[bytes]:
    return [payload for payload in payloads if not payload.startswith(b"probe-")]
