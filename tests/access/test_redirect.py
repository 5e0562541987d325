"""MQTT 5 redirection at CONNECT on real nodes: who is sent on, where, and who is not."""

from __future__ import annotations

import asyncio

import pytest

from accessproc import AccessCluster
from rawmqtt import RawClient
from roost.client import ConnectError, MQTTClient

USE_ANOTHER_SERVER = 0x9C


def test_an_entry_node_redirects_mqtt5_and_serves_mqtt311(cluster: AccessCluster) -> None:
    serving = cluster.start(2)
    entry = cluster.start(1, "--redirect", "always")[-1]
    addresses = {f"127.0.0.1:{node.port}" for node in serving}

    v5 = RawClient(entry.host, entry.port, version=5)
    connack = v5.connect("v5-client")
    assert connack is not None and connack.reason_code == USE_ANOTHER_SERVER
    assert connack.props["ServerReference"] in addresses
    v5.wait_closed()

    v311 = RawClient(entry.host, entry.port, version=4)
    connack = v311.connect("v311-client")
    assert connack is not None and connack.name == "CONNACK" and connack.reason_code == 0
    v311.disconnect()


def test_an_overloaded_node_sends_mqtt5_clients_to_a_lighter_one(cluster: AccessCluster) -> None:
    busy = cluster.start(1, "--redirect", "overloaded", "--soft-max-connections", "2")[0]
    light = cluster.start(1)[-1]

    async def main() -> None:
        served = [await MQTTClient.connect(busy.host, busy.port, f"c{index}") for index in (1, 2)]
        with pytest.raises(ConnectError) as refused:
            await MQTTClient.connect(busy.host, busy.port, "c3", max_redirects=0)
        assert refused.value.reason_code == USE_ANOTHER_SERVER
        assert refused.value.server_reference == f"127.0.0.1:{light.port}"
        followed = await MQTTClient.connect(busy.host, busy.port, "c3")
        v311 = await MQTTClient.connect(busy.host, busy.port, "c4", protocol_level=4)
        for client in [*served, followed, v311]:
            await client.disconnect()

    asyncio.run(main())
