"""The cluster's own tests, run again on a real Redis Cluster (three servers, the hash
slots split between them) instead of one server: the same node code, with keys of one
client id or one node in one slot and node-to-node channels sharded, serves clients the
same way. The ``redis_server`` fixture is overridden here, so these tests get a node of
the Redis Cluster; the nodes find the rest of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from test_cluster_failover import (
    test_the_session_of_a_killed_node_resumes_elsewhere_with_every_acknowledged_message,
)
from test_cluster_pubsub import (
    test_a_message_reaches_subscribers_on_every_node_at_each_qos,
    test_a_shared_group_spanning_nodes_gets_each_message_once,
)
from test_cluster_sessions import (
    test_a_persistent_session_with_1000_queued_messages_is_taken_over_across_nodes,
)
from test_cluster_state import (
    test_retained_messages_are_kept_cluster_wide_and_cleared_from_any_node,
)
from test_cluster_transactions import (
    test_prepared_on_one_node_checked_on_another_and_committed_on_a_third,
)

from redisclusterproc import start_redis_cluster
from roost.cluster import keys
from roost.cluster.localserver import LocalServer

__all__ = [
    "test_a_message_reaches_subscribers_on_every_node_at_each_qos",
    "test_a_persistent_session_with_1000_queued_messages_is_taken_over_across_nodes",
    "test_a_shared_group_spanning_nodes_gets_each_message_once",
    "test_prepared_on_one_node_checked_on_another_and_committed_on_a_third",
    "test_retained_messages_are_kept_cluster_wide_and_cleared_from_any_node",
    "test_the_session_of_a_killed_node_resumes_elsewhere_with_every_acknowledged_message",
]


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[list[LocalServer]]:
    servers = start_redis_cluster(tmp_path / "redis-cluster")
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def redis_server(redis_cluster: list[LocalServer]) -> LocalServer:
    return redis_cluster[0]


def test_the_cluster_keys_are_spread_over_the_servers(
    redis_cluster: list[LocalServer], cluster: object
) -> None:
    """What the nodes write lands on every server of the Redis Cluster, not on one."""
    nodes = cluster.start(3)  # type: ignore[attr-defined]
    assert len(nodes) == 3
    holders = []
    for server in redis_cluster:
        with redis.Redis(port=server.port) as client:
            holders.append({key.decode() for key in client.keys(f"{keys.PREFIX}:*")})
    assert all(holders), holders
