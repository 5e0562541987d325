"""Roost's asyncio MQTT 3.1.1 / 5.0 client."""

from roost.client.connection import MQTTClient
from roost.client.errors import ClientError, ConnectError, ConnectionLost, PublishError
from roost.client.packet_ids import PacketIds

__all__ = [
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "MQTTClient",
    "PacketIds",
    "PublishError",
]
