"""``GET /api/v1/assign?client_id=ID``: where a client should connect.

Answers from memory (the heartbeats this node has read), never with a Redis round trip
per request, so an entry point can hand out addresses as fast as clients ask.
"""

from __future__ import annotations

from aiohttp import web

from roost.address import split_host_port
from roost.cluster.placement import Placement

PLACEMENT = web.AppKey("placement", Placement)

routes = web.RouteTableDef()


@routes.get("/api/v1/assign")
async def assign(request: web.Request) -> web.Response:
    """JSON ``{"node_id", "host", "port"}`` of the node chosen by the assign policy."""
    placement = request.app[PLACEMENT]
    client_id = request.query.get("client_id", "")
    try:
        node = placement.assign(client_id)
        host, port = split_host_port(node.address)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response({"node_id": node.node_id, "host": host, "port": port})
