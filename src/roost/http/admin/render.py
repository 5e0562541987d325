"""JSON shapes of what the admin API shows: messages, sessions, connected clients,
subscriptions, transactions. Read-only views of the core's objects."""

from __future__ import annotations

import base64
from typing import Any

from roost.codec import PROTOCOL_VERSIONS
from roost.message import Message
from roost.protocol import ServerConnection
from roost.session import Session, SubscriptionOptions
from roost.transactions import HalfMessage

PAYLOAD_PREVIEW = 1024  # bytes of a payload shown; the size says if there is more

Json = dict[str, Any]


def remaining(deadline: float | None, now: float) -> float | None:
    """Seconds until ``deadline`` (None when there is none)."""
    return None if deadline is None else max(0.0, round(deadline - now, 3))


def payload_json(payload: bytes) -> Json:
    """The start of a payload: as text when it is UTF-8, else base64."""
    preview = payload[:PAYLOAD_PREVIEW]
    try:
        return {"payload": preview.decode(), "encoding": "utf-8", "payload_size": len(payload)}
    except UnicodeDecodeError:
        encoded = base64.b64encode(preview).decode()
        return {"payload": encoded, "encoding": "base64", "payload_size": len(payload)}


def message_json(message: Message, now: float) -> Json:
    return {
        "topic": message.topic,
        "qos": message.qos,
        "retain": message.retain,
        "expires_in": remaining(message.expires_at, now),
        **payload_json(message.payload),
    }


def subscription_json(client_id: str, topic_filter: str, options: SubscriptionOptions) -> Json:
    return {
        "client_id": client_id,
        "topic_filter": topic_filter,
        "qos": options.qos,
        "no_local": options.no_local,
        "retain_as_published": options.retain_as_published,
        "retain_handling": options.retain_handling,
        "identifier": options.identifier,
    }


def session_json(session: Session, connected: bool, now: float) -> Json:
    return {
        "client_id": session.client_id,
        "connected": connected,
        "expiry_interval": session.expiry_interval,
        "expires_in": remaining(session.expires_at, now),
        "subscriptions": len(session.subscriptions),
        "queued": len(session.queue),
        "inflight": len(session.inflight),
        "will_pending": session.will_due is not None,
    }


def client_json(connection: ServerConnection, session: Session, now: float) -> Json:
    return {
        **session_json(session, True, now),
        "peer": connection.transport.peer,
        "username": connection.username,
        "protocol": PROTOCOL_VERSIONS.get(connection.level, str(connection.level)),
        "keep_alive": connection.keep_alive,
        "connected_for": round(now - connection.opened_at, 3),
    }


def transaction_json(half: HalfMessage, now: float) -> Json:
    message = half.message
    return {
        "transaction_id": half.transaction_id,
        "group": half.group,
        "topic": message.topic,
        "qos": message.qos,
        "checks": half.checks,
        "next_check_in": remaining(half.next_check, now),
        **payload_json(message.payload),
    }
