"""Filtering and paging shared by the admin lists: ``?q=TEXT&offset=N&limit=N``.

Every list answers ``{"total", "offset", "limit", "items"}`` with items sorted by their
key, so that pages are stable while nothing changes (a cluster-wide list adds
``unreachable``, see :mod:`roost.http.admin.peers`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

from aiohttp import web

from roost.http.admin.errors import bad_request
from roost.http.admin.render import Json

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

T = TypeVar("T")


def _number(request: web.Request, name: str, default: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) > high:
        raise bad_request(f"{name} must be a whole number 0..{high}")
    return int(text)


def paged(
    request: web.Request,
    items: Iterable[tuple[str, T]],
    render: Callable[[T], Json],
) -> web.Response:
    """One page of ``items`` (key, item) whose key contains ``q``, rendered."""
    offset, limit = _window(request)
    text = request.query.get("q", "")
    matching = sorted((item for item in items if text in item[0]), key=lambda item: item[0])
    return _answer(
        len(matching),
        offset,
        limit,
        [render(item) for _, item in matching[offset : offset + limit]],
    )


def page(
    request: web.Request, items: list[tuple[str, Json]], unreachable: list[str]
) -> web.Response:
    """One page of ``items`` (key, JSON), filtered already, gathered from several nodes;
    ``unreachable`` names the nodes that could not be asked."""
    offset, limit = _window(request)
    items.sort(key=lambda item: item[0])
    chosen = [item for _, item in items[offset : offset + limit]]
    return _answer(len(items), offset, limit, chosen, unreachable=unreachable)


def _window(request: web.Request) -> tuple[int, int]:
    return _number(request, "offset", 0, 2**31), _number(request, "limit", DEFAULT_LIMIT, MAX_LIMIT)


def _answer(total: int, offset: int, limit: int, items: list[Json], **more: object) -> web.Response:
    return web.json_response(
        {"total": total, "offset": offset, "limit": limit, "items": items, **more}
    )
