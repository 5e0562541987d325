"""Connected clients: list, details, kick (MQTT 5: DISCONNECT 0x98); in a cluster, those
of every node (:mod:`roost.http.admin.peers`)."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator

from aiohttp import web

from roost.http.admin.errors import bad_request
from roost.http.admin.peers import cluster_paged, from_peers
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


def _find(request: web.Request) -> Connected | None:
    client_id = request.match_info["client_id"]
    for found_id, found in _connected(request.app[NODE]):
        if found_id == client_id:
            return found
    return None


def _elsewhere(request: web.Request) -> Awaitable[web.Response]:
    """The answer of the node the client is connected to."""
    return from_peers(request, f"client {request.match_info['client_id']!r} is not connected")


@routes.get("/api/v1/clients")
async def list_clients(request: web.Request) -> web.Response:
    """Connected clients, ``q`` matching their client id."""
    now = request.app[NODE].core.clock()
    return await cluster_paged(
        request,
        _connected(request.app[NODE]),
        lambda found: client_json(*found, now),
        key=lambda item: str(item["client_id"]),
    )


@routes.get("/api/v1/clients/{client_id}")
async def get_client(request: web.Request) -> web.Response:
    """One connected client, with its subscriptions."""
    found = _find(request)
    if found is None:
        return await _elsewhere(request)
    connection, session = found
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
    found = _find(request)
    if found is None:
        return await _elsewhere(request)
    connection, session = found
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
