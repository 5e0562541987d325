"""The web dashboard: static HTML, JS and CSS shipped in the package (``static/``), served
at ``/`` with the admin API. The page holds no secret: it asks for the admin token, keeps
it in the tab's sessionStorage and sends it with each API call."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

STATIC = Path(__file__).parent / "static"

routes = web.RouteTableDef()


@routes.get("/")
async def index(request: web.Request) -> web.FileResponse:
    """The dashboard's page."""
    return web.FileResponse(STATIC / "index.html")


routes.static("/dashboard", STATIC)
