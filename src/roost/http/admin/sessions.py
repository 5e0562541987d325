"""Sessions, connected or not, of this node or (in a cluster) of every node; an offline
one can be deleted."""

from __future__ import annotations

from aiohttp import web

from roost.http.admin.errors import conflict
from roost.http.admin.peers import cluster_paged, from_peers
from roost.http.admin.render import session_json
from roost.http.node import NODE

routes = web.RouteTableDef()


@routes.get("/api/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """Sessions, ``q`` matching the client id; ``connected=true|false`` narrows them."""
    core = request.app[NODE].core
    now = core.clock()
    wanted = request.query.get("connected")
    sessions = (
        (client_id, session)
        for client_id, session in core.sessions.items()
        if wanted is None or (wanted == "true") == core.is_online(client_id)
    )
    return await cluster_paged(
        request,
        sessions,
        lambda session: session_json(session, core.is_online(session.client_id), now),
        key=lambda item: str(item["client_id"]),
    )


@routes.delete("/api/v1/sessions/{client_id}")
async def delete_session(request: web.Request) -> web.Response:
    """End an offline session: its subscriptions and queued messages go, and a will still
    waiting for its delay is published now (as when the session expires)."""
    core = request.app[NODE].core
    client_id = request.match_info["client_id"]
    if client_id not in core.sessions:
        return await from_peers(request, f"no session {client_id!r}")
    if core.is_online(client_id):
        raise conflict(f"client {client_id!r} is connected: kick it first")
    core.end_session(client_id)
    return web.json_response({"client_id": client_id, "deleted": True})
