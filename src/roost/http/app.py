"""The node's aiohttp application: what it serves is the route tables added here, each
from its own module, with the node objects they need stored under typed app keys.

Always: ``/api/v1/assign`` and ``/metrics``. With an ``admin_token``: the admin API
(``/api/v1/...``, behind the token) and the dashboard at ``/``.
"""

from __future__ import annotations

from aiohttp import web

from roost.cluster.placement import Placement
from roost.http import admin, assign, dashboard, metrics
from roost.http.node import NODE, NodeView


def make_app(placement: Placement, node: NodeView) -> web.Application:
    app = web.Application()
    app[assign.PLACEMENT] = placement
    app[NODE] = node
    app.add_routes(assign.routes)
    metrics.install(app, node)
    token = node.settings.admin_token
    if token:
        admin.install(app, token)
        app.add_routes(dashboard.routes)
    return app
