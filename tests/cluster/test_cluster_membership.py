"""Membership: a node id is unique, a dead node is noticed in bounded time, a node cut off
from Redis stops serving and comes back with it, nodes survive a Redis restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from clusterproc import NODE_TIMEOUT_MS, Cluster, wait_for_log, wait_routed
from paho_helpers import Clients, code_of, wait_until

NODE_TIMEOUT = NODE_TIMEOUT_MS / 1000


def test_a_second_node_with_a_live_id_refuses_to_start(cluster: Cluster, tmp_path) -> None:
    cluster.start(1)
    command = [sys.executable, "-m", "roost", "serve", "--port", "0"]
    command += ["--data-dir", str(tmp_path / "twin"), *cluster.arguments("n0")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "node id 'n0' is already in use" in result.stderr


def test_a_killed_node_is_declared_dead_and_its_routes_dropped(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(3)
    subscriber = clients.connect(nodes[2], "sub")
    subscriber.sub("gone/#", qos=1)
    wait_routed(clients, nodes[0], subscriber, "gone/probe")
    killed_at = time.monotonic()
    nodes[2].kill()
    for node in nodes[:2]:
        wait_for_log(node, "node n2 is dead", timeout=5 * NODE_TIMEOUT)
    # Bounded: within the timeout plus a heartbeat or two.
    assert time.monotonic() - killed_at < 3 * NODE_TIMEOUT
    publisher = clients.connect(nodes[0], "pub")
    publisher.pub("gone/x", b"after", qos=1)  # nowhere to go, and nothing breaks
    assert "Traceback" not in "".join(nodes[0].log)


@pytest.mark.parametrize("version", [5, 4])
def test_a_node_cut_off_from_redis_stops_serving_until_redis_is_back(
    cluster: Cluster, clients: Clients, version: int
) -> None:
    nodes = cluster.start(2)
    connected = clients.connect(nodes[0], "victim", version=version)
    redis_process = cluster.redis_server.process
    assert redis_process is not None
    os.kill(redis_process.pid, signal.SIGSTOP)
    try:
        wait_for_log(nodes[0], "cut off from the cluster", timeout=5 * NODE_TIMEOUT)
        wait_until(lambda: connected.disconnected.is_set(), what="the client to be closed")
        refused = clients.connect(nodes[0], "newcomer", version=version, expect_success=False)
        # 0x88 Server unavailable (5.0); return code 3 (3.1.1), which paho reports as 0x88.
        assert refused.connack_rc == 0x88
    finally:
        os.kill(redis_process.pid, signal.SIGCONT)
    for node in nodes:  # every node lost Redis
        wait_for_log(node, "reaches the cluster again", timeout=5 * NODE_TIMEOUT)
    subscriber = clients.connect(nodes[1], "sub-after", version=version)
    subscriber.sub("back/#", qos=1)
    wait_routed(clients, nodes[0], subscriber, "back/probe")
    publisher = clients.connect(nodes[0], "pub-after", version=version)
    publisher.pub("back/x", b"served again", qos=1)
    subscriber.wait_for_payload(b"served again")


def test_nodes_reconnect_and_reload_routes_after_redis_restarts(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(2)
    subscriber = clients.connect(nodes[1], "sub")
    subscriber.sub("restart/#", qos=1)
    wait_routed(clients, nodes[0], subscriber, "restart/probe")
    server = cluster.redis_server
    server.stop()  # graceful: the AOF holds every acknowledged write
    server.start()
    for node in nodes:
        wait_for_log(node, "reaches the cluster again", timeout=10 * NODE_TIMEOUT)
    after = clients.connect(nodes[1], "sub2")
    after.sub("restart/#", qos=1)
    wait_routed(clients, nodes[0], after, "restart/probe2")
    publisher = clients.connect(nodes[0], "pub")
    publisher.pub("restart/x", b"after restart", qos=1)
    after.wait_for_payload(b"after restart")


def test_a_client_id_connecting_on_another_node_takes_the_session_over(
    cluster: Cluster, clients: Clients
) -> None:
    nodes = cluster.start(2)
    first = clients.connect(nodes[0], "roamer")
    second = clients.connect(nodes[1], "roamer")
    wait_until(lambda: first.disconnects, what="the first connection to be closed")
    assert code_of(first.disconnects[0]) == 0x8E  # Session taken over
    assert second.client.is_connected()
    second.sub("roam/#", qos=1)
    wait_routed(clients, nodes[0], second, "roam/probe")
