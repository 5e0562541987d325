"""Roost's asyncio MQTT 3.1.1 / 5.0 client."""

from roost.client.connection import MQTTClient
from roost.client.errors import (
    ClientError,
    ConnectError,
    ConnectionLost,
    PublishError,
    RedirectError,
)
from roost.client.packet_ids import PacketIds
from roost.client.transactions import (
    CheckRequest,
    HalfMessage,
    LocalTransactionState,
    SendResult,
    TransactionError,
    TransactionProducer,
)

__all__ = [
    "CheckRequest",
    "ClientError",
    "ConnectError",
    "ConnectionLost",
    "HalfMessage",
    "LocalTransactionState",
    "MQTTClient",
    "PacketIds",
    "PublishError",
    "RedirectError",
    "SendResult",
    "TransactionError",
    "TransactionProducer",
]
