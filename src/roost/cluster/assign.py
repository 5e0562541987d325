"""Which node a client should connect to: the assignment policies. Pure: it sees nodes as
:class:`Candidate` values and keeps no clock.

Loads come from the heartbeats, so they are up to one heartbeat interval old. Clients
assigned since then are not in them yet: without a correction a burst of requests would
all go to the node that looked least loaded at the last beat. So the :class:`Assigner`
counts the clients it sent to each node since that node's heartbeat counter last moved,
and adds them to the node's load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

LEAST_CONNECTIONS = "least-connections"
ROUND_ROBIN = "round-robin"
CLIENT_HASH = "client-hash"
POLICIES = frozenset({LEAST_CONNECTIONS, ROUND_ROBIN, CLIENT_HASH})


@dataclass(frozen=True, slots=True)
class Candidate:
    """A node clients may be sent to, as its last heartbeat describes it."""

    node_id: str
    address: str  # HOST:PORT clients use
    connections: int  # as of the heartbeat numbered ``beat``
    beat: int
    connected_now: int = 0  # a lower bound known right now (the own node's live count)


class Assigner:
    """Picks a node by policy and remembers recent assignments (see the module text)."""

    def __init__(self, policy: str = LEAST_CONNECTIONS) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown assign policy {policy!r}")
        self.policy = policy
        self._recent: dict[str, tuple[int, int]] = {}  # node -> (its beat, clients sent since)
        self._turn = 0  # round robin position

    def assign(self, candidates: Sequence[Candidate], client_id: str = "") -> Candidate:
        """The node for ``client_id`` by the policy; ``candidates`` must not be empty.
        ``client-hash`` needs a client id."""
        if self.policy == CLIENT_HASH:
            if not client_id:
                raise ValueError("the client-hash policy needs a client id")
            chosen = max(candidates, key=lambda node: _weight(node.node_id, client_id))
        elif self.policy == ROUND_ROBIN:
            ordered = sorted(candidates, key=lambda node: node.node_id)
            chosen = ordered[self._turn % len(ordered)]
            self._turn += 1
        else:
            chosen = min(candidates, key=self._rank)
        self.sent(chosen, candidates)
        return chosen

    def least_loaded(
        self, candidates: Sequence[Candidate], excluding: str = ""
    ) -> Candidate | None:
        """The node with the lowest load, counting recent assignments, other than
        ``excluding`` (None if there is none); ties go to the lowest node id, so that
        equal nodes are filled in turn. Not counted as an assignment: see :meth:`sent`."""
        others = [node for node in candidates if node.node_id != excluding]
        return min(others, key=self._rank) if others else None

    def _rank(self, node: Candidate) -> tuple[int, str]:
        return self.load(node), node.node_id

    def load(self, node: Candidate) -> int:
        """Connections as of the node's last beat plus the clients sent to it since."""
        return max(node.connections + self._sent_since_beat(node), node.connected_now)

    def _sent_since_beat(self, node: Candidate) -> int:
        beat, sent = self._recent.get(node.node_id, (node.beat, 0))
        return sent if beat == node.beat else 0

    def sent(self, chosen: Candidate, candidates: Sequence[Candidate]) -> None:
        """Count a client sent to ``chosen``; forget nodes that are no longer candidates."""
        present = {node.node_id for node in candidates}
        for gone in [node for node in self._recent if node not in present]:
            del self._recent[gone]
        self._recent[chosen.node_id] = (chosen.beat, self._sent_since_beat(chosen) + 1)


def _weight(node_id: str, client_id: str) -> int:
    """Rendezvous (highest random weight) hashing: each client goes to the node with the
    highest weight for it, so removing a node moves only that node's clients. A stable hash
    (not Python's salted ``hash``), so that every node and every run agree."""
    digest = hashlib.blake2b(f"{node_id}\0{client_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
