"""The OpenAPI document describes exactly the admin routes the node serves."""

from __future__ import annotations

import re

from aiohttp import web

from adminhttp import AdminApi
from brokerthread import RunningBroker


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path) of every admin route of ``app``, path variables as ``{name}``."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        path = "" if resource is None else resource.canonical
        if path.startswith("/api/v1/") and path != "/api/v1/assign" and route.method != "HEAD":
            found.add((route.method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)))
    return found


def test_openapi_names_every_registered_route(node: RunningBroker, api: AdminApi) -> None:
    status, document = api.get("/api/v1/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.")
    described = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    assert node.broker.http is not None
    registered = registered_routes(node.broker.http.app)
    assert described == registered
    assert len(registered) >= 15


def test_every_reference_resolves(api: AdminApi) -> None:
    document = api.get("/api/v1/openapi.json")[1]
    schemas = document["components"]["schemas"]
    references = re.findall(
        r'"\$ref": "#/components/schemas/(\w+)"', str(document).replace("'", '"')
    )
    assert references and all(name in schemas for name in references)
