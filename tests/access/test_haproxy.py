"""HAProxy (the shipped examples/haproxy/haproxy.cfg) in front of three real nodes with
``proxy_protocol = true``: clients spread evenly, a dead node's clients come back through
the balancer to the two others, and the nodes log the clients' real addresses."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from accessproc import AccessCluster
from haproxyproc import HAProxy
from paho_helpers import wait_until
from rawmqtt import connect_bytes
from roost.client import ClientError, MQTTClient

CLIENTS = 300
CONCURRENCY = 30  # clients connecting at once
MAX_SPREAD = 1.2  # most loaded node / least loaded node
RECONNECT_DELAY = 0.05  # a client's pause before it tries the balancer again


@pytest.fixture
def balanced(cluster: AccessCluster) -> Iterator[HAProxy]:
    nodes = cluster.start(3, "--proxy-protocol")
    balancer = HAProxy([f"{node.host}:{node.port}" for node in nodes])
    yield balancer
    balancer.stop()


async def stay_connected(port: int, client_id: str, connected: asyncio.Event) -> None:
    """Connect through the balancer, and again whenever the connection ends."""
    while True:
        try:
            client = await MQTTClient.connect("127.0.0.1", port, client_id, keep_alive=0)
        except (OSError, ClientError, TimeoutError):
            await asyncio.sleep(RECONNECT_DELAY)
            continue
        connected.set()
        try:
            await client.closed.wait()
        finally:
            await client.disconnect()


def test_clients_spread_and_a_dead_nodes_clients_move_to_the_others(
    cluster: AccessCluster, balanced: HAProxy
) -> None:
    async def main() -> tuple[dict[str, int], dict[str, int]]:
        connected = [asyncio.Event() for _ in range(CLIENTS)]
        async with asyncio.TaskGroup() as tasks:
            runners = []
            async with asyncio.timeout(60):
                for index, event in enumerate(connected):
                    if index % CONCURRENCY == 0:  # the previous batch is in
                        await asyncio.gather(*(event.wait() for event in connected[:index]))
                    runner = stay_connected(balanced.port, f"lb-{index}", event)
                    runners.append(tasks.create_task(runner))
                await asyncio.gather(*(event.wait() for event in connected))
            before = await asyncio.to_thread(cluster.wait_connections, CLIENTS)
            cluster.nodes[1].kill()
            survivors = ["n0", "n2"]
            after = await asyncio.to_thread(cluster.wait_connections, CLIENTS, survivors, 30)
            for runner in runners:
                runner.cancel()
        return before, after

    before, after = asyncio.run(main())
    print(f"through haproxy: {before}; after n1 died: {after}")
    assert min(before.values()) > 0, before
    assert max(before.values()) / min(before.values()) <= MAX_SPREAD, before
    assert after["n0"] > before["n0"] and after["n2"] > before["n2"], (before, after)


def test_nodes_log_the_real_client_address(cluster: AccessCluster, balanced: HAProxy) -> None:
    """A client on 127.0.0.2 is refused (3.1.1, empty client id, no clean session): the
    node's log names 127.0.0.2, while HAProxy itself connects from 127.0.0.1."""
    with socket.create_connection(("127.0.0.1", balanced.port), 10, ("127.0.0.2", 0)) as sock:
        sock.sendall(connect_bytes("", level=4, flags=0x00))
        assert sock.recv(4) == b"\x20\x02\x00\x02"  # identifier rejected
        host, port = sock.getsockname()
    address = f"({host}:{port})"
    wait_until(
        lambda: any(address in "".join(node.log) for node in cluster.nodes),
        what=f"{address} in a node's log",
    )
