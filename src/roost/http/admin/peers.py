"""The admin API across a cluster: a node answers for itself and asks the HTTP listener of
every live peer (from their heartbeats) for its part, with the caller's token.

A list gathers every peer's matching items (``?scope=node`` on the peer, every page),
sorts them with its own and pages the whole; each item names its ``node``, and peers that
did not answer in ``PEER_TIMEOUT`` are named in ``unreachable``. A request for one thing
(a client, a session) that this node does not have goes to the peers in turn, and the first
that has it answers. ``?scope=node`` keeps any request to the node asked. The nodes of a
cluster therefore share one ``admin_token``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import aiohttp
from aiohttp import web
from yarl import URL

from roost.cluster.membership import NodeInfo
from roost.http.admin.errors import not_found
from roost.http.admin.paging import MAX_LIMIT, page, paged
from roost.http.admin.render import Json
from roost.http.node import NODE

PEER_TIMEOUT = 2.0  # seconds a peer has to answer one request
MAX_PEER_ITEMS = 100_000  # items taken from one peer for one list
CLIENT = web.AppKey("peer_client", aiohttp.ClientSession)

T = TypeVar("T")


async def peer_client(app: web.Application) -> AsyncIterator[None]:
    """The HTTP client the node asks its peers with (an aiohttp cleanup context)."""
    timeout = aiohttp.ClientTimeout(total=PEER_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as client:
        app[CLIENT] = client
        yield


def _peers(request: web.Request) -> list[NodeInfo]:
    """The live peers to ask, none when the request is for this node only."""
    cluster = request.app[NODE].cluster
    if cluster is None or request.query.get("scope") == "node":
        return []
    alive = cluster.peers.alive.values()
    return sorted((info for info in alive if info.http), key=lambda info: info.node_id)


def _url(info: NodeInfo, request: web.Request, **query: str) -> str:
    host, _, port = info.http.rpartition(":")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    merged = {**request.query, **query, "scope": "node"}
    # the path as it came, percent-encoded: a client id may hold a "/"
    path = request.rel_url.raw_path
    url = URL.build(scheme="http", host=host, port=int(port), path=path, encoded=True)
    return str(url.with_query(merged))


FORWARDED_HEADERS = ("Authorization", "Content-Type")


def _headers(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name] for name in FORWARDED_HEADERS if name in request.headers}


async def _peer_items(request: web.Request, info: NodeInfo) -> list[Json]:
    """Every matching item of one peer's list, page by page."""
    client = request.app[CLIENT]
    items: list[Json] = []
    while len(items) < MAX_PEER_ITEMS:
        url = _url(info, request, offset=str(len(items)), limit=str(MAX_LIMIT))
        async with client.get(url, headers=_headers(request)) as response:
            response.raise_for_status()
            answer: Json = await response.json()
        items.extend(answer["items"])
        if not answer["items"] or len(items) >= answer["total"]:
            break
    return items


async def cluster_paged(
    request: web.Request,
    items: Iterable[tuple[str, T]],
    render: Callable[[T], Json],
    key: Callable[[Json], str],
) -> web.Response:
    """One page of a list over the whole cluster: this node's ``items`` (key, item), each
    rendered with its node, and every peer's (whose ``key`` is read from their JSON)."""
    node = request.app[NODE]
    peers = _peers(request)
    if node.cluster is None:
        return paged(request, items, render)
    text = request.query.get("q", "")
    own = [
        (item_key, {**render(item), "node": node.node_id})
        for item_key, item in items
        if text in item_key
    ]
    answers = await asyncio.gather(
        *(_peer_items(request, info) for info in peers), return_exceptions=True
    )
    unreachable = []
    for info, answer in zip(peers, answers, strict=True):
        if isinstance(answer, BaseException):
            unreachable.append(info.node_id)
        else:
            own.extend((key(item), item) for item in answer)
    return page(request, own, unreachable)


async def from_peers(request: web.Request, missing: str) -> web.Response:
    """The answer of the first peer that has what this node has not (404 ``missing``
    when none has it)."""
    client = request.app[CLIENT] if _peers(request) else None
    body: Any = await request.read() if request.can_read_body else None
    for info in _peers(request):
        assert client is not None
        try:
            async with client.request(
                request.method, _url(info, request), headers=_headers(request), data=body
            ) as response:
                if response.status != web.HTTPNotFound.status_code:
                    return web.Response(
                        body=await response.read(),
                        status=response.status,
                        content_type=response.content_type,
                    )
        except (aiohttp.ClientError, TimeoutError):
            continue
    raise not_found(missing)
