"""The assign policies, on candidates built by hand (no cluster, no clock)."""

from __future__ import annotations

from collections import Counter

import pytest

from roost.cluster.assign import (
    CLIENT_HASH,
    LEAST_CONNECTIONS,
    ROUND_ROBIN,
    Assigner,
    Candidate,
)

NOW = 1000.0  # wall-clock seconds


def nodes(*connections: int, as_of: float = NOW - 1) -> list[Candidate]:
    """Candidates whose last heartbeats were at ``as_of``."""
    return [
        Candidate(f"n{index}", f"127.0.0.1:{6000 + index}", count, as_of)
        for index, count in enumerate(connections)
    ]


def test_least_connections_picks_the_least_loaded_node() -> None:
    assert Assigner().assign(nodes(5, 2, 9), NOW).node_id == "n1"


def test_a_burst_between_heartbeats_is_spread_evenly() -> None:
    """Loads only move with heartbeats; the clients sent since count as load."""
    assigner = Assigner(LEAST_CONNECTIONS)
    candidates = nodes(0, 0, 0)
    spread = Counter(assigner.assign(candidates, NOW).node_id for _ in range(999))
    assert spread == {"n0": 333, "n1": 333, "n2": 333}


def test_a_burst_fills_the_emptier_nodes_first() -> None:
    assigner = Assigner()
    candidates = nodes(100, 0, 40)
    spread = Counter(assigner.assign(candidates, NOW).node_id for _ in range(160))
    assert spread == {"n1": 100, "n2": 60}
    final = {node.node_id: node.connections + spread[node.node_id] for node in candidates}
    assert set(final.values()) == {100}


def test_only_clients_sent_after_a_heartbeat_are_added_to_it() -> None:
    """A heartbeat counts the clients that arrived before it: counting them on top would
    count them twice; those sent after it, even if it was read later, are not in it."""
    assigner = Assigner()
    for step in range(6):
        assigner.assign(nodes(0, 0), NOW + step)  # n0 at NOW, NOW+2, NOW+4
    assert assigner.load(nodes(0, 0)[0]) == 3
    assert assigner.load(nodes(2, 0, as_of=NOW + 3)[0]) == 2 + 1


def test_round_robin_takes_nodes_in_turn_by_id() -> None:
    assigner = Assigner(ROUND_ROBIN)
    candidates = list(reversed(nodes(9, 0, 5)))
    assert [assigner.assign(candidates, NOW).node_id for _ in range(6)] == ["n0", "n1", "n2"] * 2


def test_client_hash_is_stable_and_independent_of_order_and_load() -> None:
    first, second = Assigner(CLIENT_HASH), Assigner(CLIENT_HASH)
    ids = [f"client-{index}" for index in range(300)]
    chosen = [first.assign(nodes(0, 0, 0), NOW, client_id).node_id for client_id in ids]
    again = [
        second.assign(list(reversed(nodes(50, 7, 0, as_of=NOW))), NOW, client_id).node_id
        for client_id in ids
    ]
    assert chosen == again
    assert min(Counter(chosen).values()) > 60  # all three nodes take a share


def test_client_hash_moves_only_the_clients_of_a_removed_node() -> None:
    assigner = Assigner(CLIENT_HASH)
    ids = [f"client-{index}" for index in range(300)]
    before = {cid: assigner.assign(nodes(0, 0, 0), NOW, cid).node_id for cid in ids}
    after = {cid: assigner.assign(nodes(0, 0), NOW, cid).node_id for cid in ids}
    moved = [client_id for client_id in ids if before[client_id] != after[client_id]]
    assert moved and all(before[client_id] == "n2" for client_id in moved)


def test_client_hash_needs_a_client_id() -> None:
    with pytest.raises(ValueError, match="client id"):
        Assigner(CLIENT_HASH).assign(nodes(0), NOW, "")


def test_least_loaded_elsewhere() -> None:
    assigner = Assigner()
    candidates = nodes(0, 8, 3)
    target = assigner.least_loaded(candidates, excluding="n0")
    assert target is not None and target.node_id == "n2"
    assert assigner.load(target) == 3  # asking is not sending
    assigner.sent(target, candidates, NOW)
    assert assigner.load(target) == 4
    assert assigner.least_loaded(nodes(0), excluding="n0") is None


def test_unknown_policy() -> None:
    with pytest.raises(ValueError, match="unknown assign policy"):
        Assigner("random")
