"""Which node a client should connect to: the assignment policies. Pure: it sees nodes as
:class:`Candidate` values and is told the time.

Loads come from the heartbeats, so they are up to one heartbeat interval old. Clients
assigned since a node's heartbeat are not in it yet: without a correction a burst of
requests would all go to the node that looked least loaded at its last beat. So the
:class:`Assigner` keeps the times of the clients it sent to each node and adds those
sent after the node's last heartbeat to its load. (Counting from when the heartbeat was
*read* instead would drop the clients sent between the beat and the read, up to one
interval's worth, more for some nodes than others by the phase of their beats.) Times are
wall-clock seconds, as in the heartbeats: nodes' clocks must agree to a few milliseconds.

The own node is seen the same way, through its last heartbeat, not its live count: that
count holds the clients other nodes sent it since, which their counts do not, and would
make every node keep clients away from itself.
"""

from __future__ import annotations

import bisect
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
    connections: int  # at the time ``as_of`` (wall clock) of its last heartbeat
    as_of: float


class Assigner:
    """Picks a node by policy and remembers recent assignments (see the module text)."""

    def __init__(self, policy: str = LEAST_CONNECTIONS) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown assign policy {policy!r}")
        self.policy = policy
        self._sent: dict[str, list[float]] = {}  # node -> times clients were sent to it
        self._turn = 0  # round robin position

    def assign(self, candidates: Sequence[Candidate], now: float, client_id: str = "") -> Candidate:
        """The node for ``client_id`` by the policy, counted as sent there at ``now``;
        ``candidates`` must not be empty. ``client-hash`` needs a client id."""
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
        self.sent(chosen, candidates, now)
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
        """Connections at the node's last heartbeat plus the clients sent to it since."""
        times = self._sent.get(node.node_id, ())
        return node.connections + len(times) - bisect.bisect_right(times, node.as_of)

    def sent(self, chosen: Candidate, candidates: Sequence[Candidate], now: float) -> None:
        """Count a client sent to ``chosen`` at ``now``; forget what the heartbeats hold
        already, and the nodes that are no longer candidates."""
        present = {node.node_id for node in candidates}
        for gone in [node for node in self._sent if node not in present]:
            del self._sent[gone]
        times = self._sent.setdefault(chosen.node_id, [])
        del times[: bisect.bisect_right(times, chosen.as_of)]
        bisect.insort(times, now)


def _weight(node_id: str, client_id: str) -> int:
    """Rendezvous (highest random weight) hashing: each client goes to the node with the
    highest weight for it, so removing a node moves only that node's clients. A stable hash
    (not Python's salted ``hash``), so that every node and every run agree."""
    digest = hashlib.blake2b(f"{node_id}\0{client_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
