"""How clients find their node, wired into a running node: the placement (assign policy
and MQTT 5 redirect at CONNECT) and, if ``http_port`` is set, the HTTP listener that
serves ``/api/v1/assign`` and the routes that come later."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from roost.attach import Attacher
from roost.cluster.node import ClusterNode
from roost.cluster.placement import Placement
from roost.config import Settings
from roost.core import BrokerCore

if TYPE_CHECKING:
    from roost.http.server import HttpServer
    from roost.transport.listeners import BoundListener


async def open_access(
    settings: Settings,
    core: BrokerCore,
    attacher: Attacher,
    cluster: ClusterNode | None,
    listener: str,
    mqtt_listeners: Sequence[BoundListener] = (),
) -> HttpServer | None:
    """Make the placement the attacher's redirector and start the HTTP listener (None
    when ``http_port`` is -1). ``listener`` is HOST:PORT of the MQTT listener, the
    node's default id and address."""
    if cluster is not None:
        placement = Placement(settings, cluster.node_id, cluster.address, core, cluster)
    else:
        node_id = settings.node_id or listener
        placement = Placement(settings, node_id, settings.advertise or listener, core)
    if settings.redirect != "never":
        attacher.redirector = placement
    if settings.http_port < 0:
        return None
    # aiohttp is imported only by nodes that serve HTTP
    from roost.http.app import make_app
    from roost.http.node import NodeView
    from roost.http.server import HttpServer

    node = NodeView(settings, core, cluster, listener, tuple(mqtt_listeners))
    http = HttpServer(make_app(placement, node), settings.http_host, settings.http_port)
    await http.start()
    if cluster is not None:
        cluster.http_address = reachable_address(settings.http_host, http.port, cluster.address)
    return http


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def reachable_address(host: str, port: int, node_address: str) -> str:
    """HOST:PORT at which the other nodes reach this node's HTTP listener: its host,
    or the host of the node's advertised MQTT address when it listens on every address."""
    if host in WILDCARD_HOSTS:
        host = node_address.rpartition(":")[0]
    return f"{host}:{port}"
