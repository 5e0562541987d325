"""Subscriptions of the sessions of this node or (in a cluster) of every node, all or one
client's."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web

from roost.http.admin.peers import cluster_paged
from roost.http.admin.render import Json, subscription_json
from roost.http.node import NODE

routes = web.RouteTableDef()


@routes.get("/api/v1/subscriptions")
async def list_subscriptions(request: web.Request) -> web.Response:
    """Subscriptions by topic filter, ``q`` matching the filter or the client id,
    ``client_id`` naming one session."""
    sessions = request.app[NODE].core.sessions
    only = request.query.get("client_id")
    chosen = sessions.values() if only is None else [s for s in [sessions.get(only)] if s]

    def entries() -> Iterator[tuple[str, Json]]:
        for session in chosen:
            for topic_filter, options in session.subscriptions.items():
                entry = subscription_json(session.client_id, topic_filter, options)
                yield f"{topic_filter}\0{session.client_id}", entry

    return await cluster_paged(
        request,
        entries(),
        lambda entry: entry,
        key=lambda item: f"{item['topic_filter']}\0{item['client_id']}",
    )
