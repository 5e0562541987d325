"""Connected clients of this node: list, details, kick (MQTT 5: DISCONNECT 0x98)."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web

from roost.http.admin.errors import bad_request, not_found
from roost.http.admin.paging import paged
from roost.http.admin.render import client_json, subscription_json
from roost.http.node import NODE, NodeView
from roost.protocol import ServerConnection
from roost.session import Session

DEFAULT_KICK_REASON = "disconnected by an operator"
MAX_KICK_REASON = 256  # characters

routes = web.RouteTableDef()

Connected = tuple[ServerConnection, Session]


def _connected(node: NodeView) -> Iterator[tuple[str, Connected]]:
    sessions = node.core.sessions
    for client_id, connection in node.core.connections.items():
        session = sessions.get(client_id)
        if isinstance(connection, ServerConnection) and session is not None:
            yield client_id, (connection, session)


def _find(request: web.Request) -> Connected:
    client_id = request.match_info["client_id"]
    for found_id, found in _connected(request.app[NODE]):
        if found_id == client_id:
            return found
    raise not_found(f"client {client_id!r} is not connected to this node")


@routes.get("/api/v1/clients")
async def list_clients(request: web.Request) -> web.Response:
    """Clients connected to this node, ``q`` matching their client id."""
    now = request.app[NODE].core.clock()
    return paged(request, _connected(request.app[NODE]), lambda found: client_json(*found, now))


@routes.get("/api/v1/clients/{client_id}")
async def get_client(request: web.Request) -> web.Response:
    """One connected client, with its subscriptions."""
    connection, session = _find(request)
    now = request.app[NODE].core.clock()
    subscribed = [
        subscription_json(session.client_id, topic_filter, options)
        for topic_filter, options in sorted(session.subscriptions.items())
    ]
    return web.json_response({**client_json(connection, session, now), "subscribed": subscribed})


@routes.post("/api/v1/clients/{client_id}/kick")
async def kick_client(request: web.Request) -> web.Response:
    """Close a client's connection; an MQTT 5 client gets DISCONNECT 0x98 (Administrative
    action) with the reason given as ``{"reason": "..."}``. Its session stays."""
    connection, session = _find(request)
    reason = DEFAULT_KICK_REASON
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError as exc:
            raise bad_request("the body must be JSON") from exc
        given = body.get("reason") if isinstance(body, dict) else None
        if given is not None and not isinstance(given, str):
            raise bad_request("reason must be a string")
        reason = (given or reason)[:MAX_KICK_REASON]
    connection.kick(reason)
    return web.json_response({"client_id": session.client_id, "kicked": True, "reason": reason})
