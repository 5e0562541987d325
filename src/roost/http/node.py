"""What the node's HTTP routes (other than assignment) look at: the core, the cluster
membership if any, the settings and the MQTT listener, under one typed app key."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from roost.cluster.node import ClusterNode
from roost.config import Settings
from roost.core import BrokerCore
from roost.figures import Figures, read_figures
from roost.transport.listeners import BoundListener


@dataclass(frozen=True)
class NodeView:
    settings: Settings
    core: BrokerCore
    cluster: ClusterNode | None
    mqtt_listener: str  # HOST:PORT of the main MQTT listener
    mqtt_listeners: tuple[BoundListener, ...] = ()  # all of them, the main one first

    @property
    def node_id(self) -> str:
        if self.cluster is not None:
            return self.cluster.node_id
        return self.settings.node_id or self.mqtt_listener

    def figures(self) -> Figures:
        return read_figures(self.core, self.cluster)


NODE = web.AppKey("node", NodeView)
