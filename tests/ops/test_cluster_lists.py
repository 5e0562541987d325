"""Cluster-wide lists of the admin API across two real ``roost serve --cluster``
processes (one real Valkey): node 0's nodes list shows both nodes (from heartbeats), and a
retained message published on node 1 is listed by node 0 (every node keeps them all)."""

from __future__ import annotations

import json
from typing import Any

from adminhttp import TOKEN, request
from clusterfixtures import clients, cluster
from clusterproc import Cluster
from paho_helpers import Clients, wait_until
from roost.cluster.localserver import free_port

__all__ = ["clients", "cluster"]  # fixtures


def get(port: int, path: str) -> Any:
    status, _, body = request(
        "GET", f"http://127.0.0.1:{port}{path}", {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200, body
    return json.loads(body)


def test_nodes_and_retained_are_listed_cluster_wide(cluster: Cluster, clients: Clients) -> None:
    ports = [free_port(), free_port()]
    for port in ports:
        cluster.add_node(f"n{len(cluster.nodes)}", "--http-port", str(port), "--admin-token", TOKEN)
    cluster.wait_all_joined()

    def listed_nodes() -> list[str]:
        return [record["node_id"] for record in get(ports[0], "/api/v1/nodes")["nodes"]]

    wait_until(lambda: listed_nodes() == ["n0", "n1"], what="both nodes in n0's list")
    nodes = get(ports[0], "/api/v1/nodes")["nodes"]
    assert [record["self"] for record in nodes] == [True, False]

    publisher = clients.connect(cluster.nodes[1], "publisher-on-n1")
    publisher.pub("plant/boiler/state", b"running", qos=1, retain=True)

    def retained_on_n0() -> list[tuple[str, str]]:
        page = get(ports[0], "/api/v1/retained?filter=plant/%23")
        return [(item["topic"], item["payload"]) for item in page["items"]]

    wait_until(
        lambda: retained_on_n0() == [("plant/boiler/state", "running")],
        what="n1's retained message listed by n0",
    )
