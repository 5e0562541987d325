"""The admin API, ``/api/v1/...``: JSON on the node's HTTP listener for operators and the
dashboard. Present only when ``admin_token`` is set; every route asks for that token as a
bearer token (:mod:`roost.http.admin.auth`). One module per resource."""

from __future__ import annotations

from aiohttp import web

from roost.http.admin import (
    clients,
    node,
    openapi,
    retained,
    sessions,
    subscriptions,
    transactions,
)
from roost.http.admin.auth import require_token
from roost.http.admin.peers import peer_client

RESOURCES = (node, clients, sessions, subscriptions, retained, transactions, openapi)


def install(app: web.Application, token: str) -> None:
    """Add the admin routes to ``app``, behind the bearer token."""
    app.middlewares.append(require_token(token))
    app.cleanup_ctx.append(peer_client)
    for resource in RESOURCES:
        app.add_routes(resource.routes)
