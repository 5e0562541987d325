"""Which other nodes are alive, judged from their heartbeats. Pure: every call takes
``now``.

Each node writes a heartbeat record with a counter that moves on every beat. A peer is
alive while its counter keeps moving: one deadline per peer, pushed back whenever a new
beat is seen, in one timer structure for all peers (as keep alive is for connections). A
peer whose record is gone from Redis, or whose deadline passes, is dead.
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.timers import Deadlines


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What a node announces about itself."""

    node_id: str
    address: str  # HOST:PORT that clients use
    connections: int
    version: str
    started: float  # wall-clock time
    beat: int  # moves on with every heartbeat
    routes: int  # version of its route list
    redirect: str = "never"  # its MQTT 5 redirect mode: "always" marks an entry node
    at: float = 0.0  # wall-clock time of the heartbeat
    http: str = ""  # HOST:PORT of its HTTP listener ("" = none): the admin API's peers


class Peers:
    """The other live nodes and their last heartbeat."""

    def __init__(self, own_node: str, timeout: float) -> None:
        self.own_node = own_node
        self.timeout = timeout
        self.alive: dict[str, NodeInfo] = {}
        self._deadlines: Deadlines[str] = Deadlines()
        self._dead: dict[str, int] = {}  # node declared dead -> its beat then

    def seen(self, info: NodeInfo, now: float) -> bool:
        """Take a peer's heartbeat record; True if the peer is new. A node declared dead
        stays so until it beats again."""
        if self._dead.get(info.node_id) == info.beat:
            return False
        self._dead.pop(info.node_id, None)
        known = self.alive.get(info.node_id)
        self.alive[info.node_id] = info
        if known is None or known.beat != info.beat:
            self._deadlines.schedule(info.node_id, now + self.timeout)
        return known is None

    def update(self, infos: list[NodeInfo], now: float) -> tuple[list[NodeInfo], list[str]]:
        """Take every record read from Redis (the own one excluded); returns the peers
        that are new and those that are dead (gone from Redis, or silent too long)."""
        present = {info.node_id for info in infos}
        for node in [node for node in self._dead if node not in present]:
            del self._dead[node]
        joined = [info for info in infos if self.seen(info, now)]
        gone = [node for node in self.alive if node not in present]
        for node in gone:
            self._declare_dead(node)
        silent = [node for node in self._deadlines.due(now) if node in self.alive]
        for node in silent:
            self._declare_dead(node)
        return joined, gone + silent

    def _declare_dead(self, node: str) -> None:
        info = self.alive.pop(node)
        self._dead[node] = info.beat
        self._deadlines.cancel(node)
