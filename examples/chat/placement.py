"""Which node a user connects to: the one a node's ``/api/v1/assign`` names, or the one
given on the command line."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import aiohttp


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """A node to connect to. ``node_id`` is the cluster's name for it when an assign answer
    gave one, else its address: a client connected straight to a port is not told."""

    node_id: str
    host: str
    port: int


async def assigned(assign_url: str, client_id: str) -> NodeAddress:
    """Ask ``assign_url`` (``http://HOST:PORT`` of any node's HTTP listener) where
    ``client_id`` should connect."""
    url = f"{assign_url.rstrip('/')}/api/v1/assign?client_id={quote(client_id)}"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        response.raise_for_status()
        answer = await response.json()
    return NodeAddress(str(answer["node_id"]), str(answer["host"]), int(answer["port"]))


def given(host: str, port: int) -> NodeAddress:
    return NodeAddress(f"{host}:{port}", host, port)
