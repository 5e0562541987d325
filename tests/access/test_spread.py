"""1,000 clients spread over three nodes: through ``/api/v1/assign``, and through an entry
node that redirects MQTT 5 clients. Real nodes, real Valkey, real connections."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import aiohttp

from accessproc import AccessCluster, assign_url
from paho_helpers import TIMEOUT
from rawmqtt import connect_bytes
from roost.client import MQTTClient

CLIENTS = 1000
CONCURRENCY = 50  # clients connecting at once
MAX_SPREAD = 1.1  # most loaded node / least loaded node


async def run_clients(connect_one: Callable[[int], Awaitable[None]]) -> None:
    """``connect_one(index)`` for every client, CONCURRENCY at a time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(CLIENTS):
        queue.put_nowait(index)

    async def worker() -> None:
        while not queue.empty():
            await connect_one(queue.get_nowait())

    async with asyncio.timeout(60):
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


def assert_even(counts: dict[str, int]) -> None:
    assert min(counts.values()) > 0, counts
    assert max(counts.values()) / min(counts.values()) <= MAX_SPREAD, counts


def test_assign_spreads_1000_clients_evenly(cluster: AccessCluster) -> None:
    """Each client asks the entry point (node n0, itself one of the three) where to go,
    then connects there with a bare MQTT 3.1.1 socket and stays connected."""
    nodes = cluster.start(3)
    assigned: Counter[str] = Counter()

    async def main() -> dict[str, int]:
        async with AsyncExitStack() as stack:
            http = await stack.enter_async_context(aiohttp.ClientSession())

            async def connect_one(index: int) -> None:
                url = assign_url(nodes[0], f"spread-{index}")
                async with http.get(url) as response:
                    answer = await response.json()
                reader, writer = await asyncio.open_connection(answer["host"], answer["port"])
                stack.callback(writer.close)
                writer.write(connect_bytes(f"spread-{index}", level=4, keep_alive=0))
                connack = await asyncio.wait_for(reader.readexactly(4), TIMEOUT)
                assert connack == b"\x20\x02\x00\x00"
                assigned[answer["node_id"]] += 1

            await run_clients(connect_one)
            return await asyncio.to_thread(cluster.wait_connections, CLIENTS)

    counts = asyncio.run(main())
    print("assigned through n0:", counts)
    assert counts == dict(assigned)
    assert_even(counts)


def test_an_entry_node_redirects_1000_mqtt5_clients_evenly(cluster: AccessCluster) -> None:
    """Every client connects to the entry node (``redirect = always``) and follows its
    0x9C "use another server" to one of the three serving nodes."""
    cluster.start(3)
    entry = cluster.start(1, "--redirect", "always")[-1]

    async def main() -> dict[str, int]:
        async with AsyncExitStack() as stack:

            async def connect_one(index: int) -> None:
                client = await MQTTClient.connect(entry.host, entry.port, f"redirected-{index}")
                stack.push_async_callback(client.disconnect)

            await run_clients(connect_one)
            return await asyncio.to_thread(cluster.wait_connections, CLIENTS)

    counts = asyncio.run(main())
    print("redirected by n3:", counts)
    assert counts.pop("n3") == 0  # the entry node serves no MQTT 5 client
    assert_even(counts)
