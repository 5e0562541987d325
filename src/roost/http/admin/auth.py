"""Bearer-token check for every ``/api/v1/`` route but the public ones.

A middleware, not a per-handler decorator: a path under ``/api/v1/`` that does not exist
answers 401 too without the token, so an unauthenticated caller learns nothing about the
API, not even which routes it has.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

API_PREFIX = "/api/v1/"
PUBLIC_PATHS = frozenset({"/api/v1/assign"})  # client assignment is for MQTT clients


def require_token(token: str) -> Middleware:
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path.startswith(API_PREFIX) and path not in PUBLIC_PATHS:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return web.json_response(
                    {"error": "unauthorized"},
                    status=401,
                    headers={"WWW-Authenticate": 'Bearer realm="roost"'},
                )
        return await handler(request)

    return check
