"""This node: liveness, readiness, what it is and runs with, its figures, and the cluster's
nodes as their heartbeats tell them."""

from __future__ import annotations

import time
from dataclasses import asdict, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

from roost import __version__
from roost.config import SECRET_SETTINGS, Settings
from roost.figures import Figures
from roost.http.node import NODE, NodeView

HIDDEN = "********"

routes = web.RouteTableDef()


@routes.get("/api/v1/health")
async def health(request: web.Request) -> web.Response:
    """The node's event loop answers (liveness)."""
    return web.json_response({"status": "ok"})


@routes.get("/api/v1/ready")
async def ready(request: web.Request) -> web.Response:
    """Whether the node takes clients now (readiness): 503 with the reasons if not."""
    node = request.app[NODE]
    reasons = []
    if node.cluster is not None and node.cluster.cut_off:
        reasons.append("cut off from the cluster's Redis")
    if node.core.store.backlogged:
        reasons.append("the store is behind (max_pending_writes)")
    status = 503 if reasons else 200
    return web.json_response({"ready": not reasons, "reasons": reasons}, status=status)


def visible_settings(settings: Settings) -> dict[str, Any]:
    """Every setting, secrets hidden: the admin token, a password in the cluster URL."""
    shown = asdict(settings)
    for name in SECRET_SETTINGS:
        if shown[name]:
            shown[name] = HIDDEN
    url = urlsplit(settings.cluster)
    if url.password is not None:
        netloc = f"{url.username or ''}:{HIDDEN}@{url.hostname}"
        if url.port is not None:
            netloc += f":{url.port}"
        shown["cluster"] = urlunsplit(url._replace(netloc=netloc))
    return shown


@routes.get("/api/v1/node")
async def node_info(request: web.Request) -> web.Response:
    """Version, uptime, listeners and settings of this node."""
    node = request.app[NODE]
    settings = node.settings
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    http_port = sockname[1] if sockname else settings.http_port
    return web.json_response(
        {
            "node_id": node.node_id,
            "version": __version__,
            "uptime": round(node.core.clock() - node.core.traffic.started, 3),
            "cluster": node.cluster is not None,
            "listeners": {
                "mqtt": node.mqtt_listener,
                "http": f"{settings.http_host}:{http_port}",
                "all": [bound.info() for bound in node.mqtt_listeners],
            },
            "settings": visible_settings(settings),
        }
    )


def figures_json(figures: Figures) -> dict[str, Any]:
    """Every figure; the commit latency histogram as its count and total."""
    shown = {
        field.name: getattr(figures, field.name)
        for field in fields(figures)
        if field.name not in ("commit_latency", "cluster", "transactions")
    }
    shown["clients_disconnected"] = figures.clients_disconnected
    shown["transactions"] = asdict(figures.transactions)
    shown["cluster"] = None if figures.cluster is None else asdict(figures.cluster)
    latency = figures.commit_latency
    if latency is not None:
        shown["commit_latency"] = {"count": latency.count, "seconds": latency.total}
    return shown


@routes.get("/api/v1/stats")
async def stats(request: web.Request) -> web.Response:
    """This node's figures (the ones ``/metrics`` exports), for the dashboard."""
    return web.json_response(figures_json(request.app[NODE].figures()))


def _own_record(node: NodeView) -> dict[str, Any]:
    core = node.core
    cluster = node.cluster
    return {
        "node_id": node.node_id,
        "address": cluster.address if cluster else node.settings.advertise or node.mqtt_listener,
        "connections": len(core.connections),
        "version": __version__,
        "started": time.time() - (core.clock() - core.traffic.started),
        "last_beat_age": 0.0,
        "http": cluster.http_address if cluster else "",
        "self": True,
    }


@routes.get("/api/v1/nodes")
async def nodes(request: web.Request) -> web.Response:
    """This node and, in a cluster, the live nodes as their last heartbeat told."""
    node = request.app[NODE]
    listed = [_own_record(node)]
    if node.cluster is not None:
        now = time.time()
        for info in sorted(node.cluster.peers.alive.values(), key=lambda info: info.node_id):
            listed.append(
                {
                    "node_id": info.node_id,
                    "address": info.address,
                    "connections": info.connections,
                    "version": info.version,
                    "started": info.started,
                    "last_beat_age": round(max(0.0, now - info.at), 3),
                    "http": info.http,
                    "self": False,
                }
            )
    return web.json_response({"nodes": listed})
