"""Fixtures for tests of real cluster nodes: ``cluster`` (node processes sharing the test's
real Valkey, see clusterproc.py), ``make_node`` (nodes in threads of the test process, see
brokerthread.py, for tests that look into a node), ``clients`` (paho clients) and ``raw``
(raw MQTT clients), both stopped before the nodes are. A test directory's conftest, or a
test module, imports them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from brokerthread import BrokerFactory, RunningBroker
from clusterproc import NODE_TIMEOUT_MS, Cluster
from paho_helpers import Clients
from rawmqtt import RawFactory
from roost.cluster.localserver import LocalServer


@pytest.fixture
def cluster(redis_server: LocalServer, tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(redis_server, tmp_path / "nodes")
    yield nodes
    nodes.stop_all()


@pytest.fixture
def make_node(
    make_broker: BrokerFactory, redis_server: LocalServer
) -> Callable[..., RunningBroker]:
    """``make_node(node_id, **settings)``: a node of the test's cluster in a thread of the
    test process, started once it has joined; stopped at teardown."""

    def make(node_id: str, **settings: Any) -> RunningBroker:
        defaults = {"node_timeout_ms": NODE_TIMEOUT_MS}
        return make_broker(cluster=redis_server.url, node_id=node_id, **{**defaults, **settings})

    return make


def route_filters(node: RunningBroker, other: str) -> frozenset[str]:
    """The filters the route table of in-process ``node`` holds for node ``other`` (read
    on the node's loop)."""
    cluster = node.broker.cluster
    assert cluster is not None
    return node.on_loop(lambda: cluster.routes.filters_of(other))


@pytest.fixture
def clients(cluster: Cluster) -> Iterator[Clients]:
    """paho clients, stopped before the nodes are."""
    tracked = Clients()
    yield tracked
    tracked.close_all()


@pytest.fixture
def raw(cluster: Cluster) -> Iterator[RawFactory]:
    """Raw MQTT clients (rawmqtt.py) of the nodes: ``raw(node)``, ``raw.connected(node, id)``;
    closed before the nodes are stopped."""
    factory = RawFactory()
    yield factory
    factory.close_all()
