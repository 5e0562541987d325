"""Presence events: ``$SYS/roost/clients/<client id>/connected`` and ``.../disconnected``,
published by the node a client connects to (QoS 0, not retained), with a JSON payload
naming the client and the node. Applications subscribe to
``$SYS/roost/clients/+/connected`` (a ``#`` or ``+`` first level never matches ``$SYS``
topics [MQTT-4.7.2-1]). Pure: builds the messages, the core publishes them."""

from __future__ import annotations

import json

from roost.message import Message

TOPIC_PREFIX = "$SYS/roost/clients/"
CONNECTED = "connected"
DISCONNECTED = "disconnected"


def presence_event(client_id: str, node: str, event: str, now: float) -> Message:
    payload = json.dumps({"client_id": client_id, "node": node, "event": event})
    return Message(f"{TOPIC_PREFIX}{client_id}/{event}", payload.encode(), 0, False, now=now)
