"""Where a node sends clients: the candidates it sees, and the MQTT 5 redirect decision."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from roost.address import split_host_port
from roost.cluster.membership import NodeInfo, Peers
from roost.cluster.placement import Placement
from roost.config import Settings, load_settings
from roost.errors import ConfigError

MQTT_311, MQTT_5 = 4, 5


@dataclass
class FakeCore:
    connections: dict[str, object] = field(default_factory=dict)

    def serve(self, count: int) -> None:
        self.connections = {f"c{index}": object() for index in range(count)}


NOW = 1000.0


@dataclass
class FakeCluster:
    peers: Peers
    announced: tuple[float, int] = (NOW - 1, 0)


def cluster_of(*infos: tuple[str, int, str]) -> FakeCluster:
    """Peers (node id, connections, redirect mode) as alive."""
    peers = Peers("me", timeout=1.0)
    for node_id, connections, redirect in infos:
        info = NodeInfo(node_id, f"{node_id}:1883", connections, "v", 0, 1, 0, redirect, NOW - 1)
        peers.seen(info, 0)
    return FakeCluster(peers)


def placement(core: FakeCore, cluster: FakeCluster | None, **settings: object) -> Placement:
    return Placement(
        Settings(**settings),  # type: ignore[arg-type]
        "me",
        "me:1883",
        core,
        cluster,
        clock=lambda: NOW,
    )


def test_a_node_alone_assigns_itself() -> None:
    alone = placement(FakeCore(), None)
    assert [alone.assign("x").address for _ in range(3)] == ["me:1883"] * 3
    assert placement(FakeCore(), None, redirect="always").redirect(MQTT_5) is None


def test_entry_nodes_are_not_assigned_while_others_live() -> None:
    cluster = cluster_of(("a", 50, "never"), ("entry2", 0, "always"))
    entry = placement(FakeCore(), cluster, redirect="always")
    assert {node.node_id for node in entry.candidates(NOW)} == {"a"}
    everyone_entry = placement(FakeCore(), cluster_of(("entry2", 0, "always")), redirect="always")
    assert {node.node_id for node in everyone_entry.candidates(NOW)} == {"me", "entry2"}


def test_the_own_load_is_the_last_heartbeat_of_this_node() -> None:
    """Not the live count: that holds clients other nodes sent here since, and theirs do
    not (see roost.cluster.assign)."""
    core = FakeCore()
    core.serve(9)
    cluster = cluster_of(("a", 5, "never"))
    cluster.announced = (NOW - 1, 4)
    node = placement(core, cluster)
    assert [node.assign("x").node_id for _ in range(3)] == ["me", "a", "me"]


def test_always_sends_mqtt5_clients_to_the_least_loaded_other_node() -> None:
    node = placement(
        FakeCore(), cluster_of(("a", 9, "never"), ("b", 3, "never")), redirect="always"
    )
    assert node.redirect(MQTT_311) is None
    targets = [node.redirect(MQTT_5) for _ in range(8)]
    assert targets == ["b:1883"] * 6 + ["a:1883", "b:1883"]


def test_overloaded_redirects_above_the_soft_limit_to_a_lighter_node() -> None:
    core = FakeCore()
    node = placement(
        core, cluster_of(("a", 4, "never")), redirect="overloaded", soft_max_connections=5
    )
    core.serve(4)
    assert node.redirect(MQTT_5) is None
    core.serve(5)
    assert node.redirect(MQTT_5) == "a:1883"  # a carries 4 (+0 sent)
    assert node.redirect(MQTT_5) is None  # a now counts 5: not lighter than this node
    assert node.redirect(MQTT_311) is None


def test_overloaded_needs_a_soft_limit() -> None:
    with pytest.raises(ConfigError, match="soft_max_connections"):
        load_settings({"redirect": "overloaded"})
    assert load_settings({"redirect": "overloaded", "soft_max_connections": 10}).redirect


@pytest.mark.parametrize(
    ("text", "expected"),
    [("h:1", ("h", 1)), ("[::1]:5", ("::1", 5)), ("::1", ("::1", 9)), ("host", ("host", 9))],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text, 9) == expected


@pytest.mark.parametrize("text", ["", ":5", "h:x", "h:0", "h:70000", "host"])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        split_host_port(text)
