"""The admin API's error answers: ``{"error": "..."}`` with the HTTP status, raised from
a handler."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web

E = TypeVar("E", web.HTTPBadRequest, web.HTTPNotFound, web.HTTPConflict)


def _error(kind: type[E], text: str) -> E:
    return kind(text=json.dumps({"error": text}), content_type="application/json")


def bad_request(text: str) -> web.HTTPBadRequest:
    return _error(web.HTTPBadRequest, text)


def not_found(text: str) -> web.HTTPNotFound:
    return _error(web.HTTPNotFound, text)


def conflict(text: str) -> web.HTTPConflict:
    return _error(web.HTTPConflict, text)
