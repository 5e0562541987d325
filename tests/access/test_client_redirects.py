"""``roost.client`` following Server References: loops and endless chains end in a clear
error. The servers are stubs that answer every CONNECT with 0x9C."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from roost.client import MQTTClient, RedirectError
from roost.codec import MQTT_5, ConnAck, Properties, encode

USE_ANOTHER_SERVER = 0x9C


async def redirecting_server(reference: Callable[[], str]) -> asyncio.Server:
    """A server answering any CONNECT with CONNACK 0x9C naming ``reference()``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        connack = ConnAck(False, USE_ANOTHER_SERVER, Properties(server_reference=reference()))
        writer.write(encode(connack, MQTT_5))
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def port_of(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


def test_a_redirect_loop_is_detected() -> None:
    async def main() -> None:
        servers: list[asyncio.Server] = []
        servers.append(await redirecting_server(lambda: f"127.0.0.1:{port_of(servers[1])}"))
        servers.append(await redirecting_server(lambda: f"127.0.0.1:{port_of(servers[0])}"))
        with pytest.raises(RedirectError, match="redirect loop") as error:
            await MQTTClient.connect("127.0.0.1", port_of(servers[0]), "looping")
        assert len(error.value.servers) == 3
        for server in servers:
            server.close()

    asyncio.run(main())


def test_at_most_three_redirects_are_followed() -> None:
    async def main() -> None:
        servers: list[asyncio.Server] = []
        for index in range(5):
            servers.append(
                await redirecting_server(lambda at=index: f"127.0.0.1:{port_of(servers[at + 1])}")
            )
        with pytest.raises(RedirectError, match="more than 3 redirects"):
            await MQTTClient.connect("127.0.0.1", port_of(servers[0]), "chained")
        for server in servers:
            server.close()

    asyncio.run(main())
