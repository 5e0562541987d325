"""Where clients should connect, as this node sees it: the nodes (this one and the live
peers, with the loads their heartbeats announce) given to the assign policy.

One object answers both ``GET /api/v1/assign`` and the MQTT 5 redirect at CONNECT, so
both count the same recent assignments. Entry nodes (``redirect = "always"``) send MQTT 5
clients on, so they are not chosen while any other node is alive.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sized
from typing import Protocol

from roost.cluster.assign import Assigner, Candidate
from roost.cluster.membership import Peers
from roost.codec import MQTT_5
from roost.config import Settings

ENTRY = "always"  # the redirect mode of an entry node


class Members(Protocol):
    """The cluster membership this needs (a :class:`~roost.cluster.node.ClusterNode`)."""

    announced: tuple[float, int]  # (wall-clock time, connections) of its last heartbeat
    peers: Peers


class Load(Protocol):
    """What the node serves now (a :class:`~roost.core.BrokerCore`)."""

    @property
    def connections(self) -> Sized: ...


class Placement:
    """This node's answer to "where should this client connect?"."""

    def __init__(
        self,
        settings: Settings,
        node_id: str,
        address: str,
        load: Load,
        members: Members | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``address`` is the HOST:PORT clients use to reach this node; without
        ``members`` (a node alone) every answer is this node. ``clock`` is wall-clock
        time, as in the heartbeats."""
        self.settings = settings
        self.node_id = node_id
        self.address = address
        self.assigner = Assigner(settings.assign_policy)
        self._load = load
        self._members = members
        self._clock = clock

    def candidates(self, now: float) -> list[Candidate]:
        """The nodes clients may be sent to: the live ones, entry nodes only if no other."""
        if self._members is None:
            return [Candidate(self.node_id, self.address, len(self._load.connections), now)]
        as_of, connections = self._members.announced
        own = Candidate(self.node_id, self.address, connections, as_of)
        nodes = [(own, self.settings.redirect)]
        nodes += [
            (Candidate(info.node_id, info.address, info.connections, info.at), info.redirect)
            for info in self._members.peers.alive.values()
        ]
        serving = [node for node, redirect in nodes if redirect != ENTRY]
        return serving or [node for node, _ in nodes]

    def assign(self, client_id: str) -> Candidate:
        """The node for a client by the assign policy (ValueError: ``client-hash`` without
        a client id)."""
        now = self._clock()
        return self.assigner.assign(self.candidates(now), now, client_id)

    def redirect(self, protocol_level: int) -> str | None:
        """The server an MQTT 5 client connecting here should use instead (HOST:PORT), or
        None to serve it here. A 3.1.1 client has no way to be told: it is always served.
        An overloaded node sends clients only to a node that carries less than itself."""
        mode = self.settings.redirect
        if protocol_level < MQTT_5 or mode == "never":
            return None
        own = len(self._load.connections)
        if mode == "overloaded" and own < self.settings.soft_max_connections:
            return None
        now = self._clock()
        candidates = self.candidates(now)
        target = self.assigner.least_loaded(candidates, excluding=self.node_id)
        if target is None or (mode == "overloaded" and self.assigner.load(target) >= own):
            return None
        self.assigner.sent(target, candidates, now)
        return target.address
