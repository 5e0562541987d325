"""The node's aiohttp application: what it serves is the route tables added here, each
from its own module, with the node objects they need stored under typed app keys."""

from __future__ import annotations

from aiohttp import web

from roost.cluster.placement import Placement
from roost.http import assign


def make_app(placement: Placement) -> web.Application:
    app = web.Application()
    app[assign.PLACEMENT] = placement
    app.add_routes(assign.routes)
    return app
