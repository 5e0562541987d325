"""Subscriptions of the sessions on this node, all or one client's."""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web

from roost.http.admin.paging import paged
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

    return paged(request, entries(), lambda entry: entry)
