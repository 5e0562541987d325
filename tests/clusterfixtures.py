"""Fixtures for tests of real cluster nodes: ``cluster`` (node processes sharing the test's
real Valkey, see clusterproc.py), ``clients`` (paho clients) and ``raw`` (raw MQTT clients),
both stopped before the nodes are. A test directory's conftest, or a test module, imports them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clusterproc import Cluster
from paho_helpers import Clients
from rawmqtt import RawFactory
from roost.cluster.localserver import LocalServer


@pytest.fixture
def cluster(redis_server: LocalServer, tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(redis_server, tmp_path / "nodes")
    yield nodes
    nodes.stop_all()


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
