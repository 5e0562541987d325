"""Operations on a two-node cluster (in-process nodes, a real Valkey): the nodes list comes
from heartbeats, /metrics exports the forwarding counters, and a decision posted to the
node that does not hold a transaction reaches the one that does."""

from __future__ import annotations

from adminhttp import TOKEN, AdminApi, http_base, request
from brokerthread import BrokerFactory, RunningBroker
from paho_helpers import Clients, publish_half_message, wait_until
from roost.cluster.localserver import LocalServer


def start_node(make_broker: BrokerFactory, redis_server: LocalServer, name: str) -> RunningBroker:
    return make_broker(
        cluster=redis_server.url,
        node_id=name,
        node_timeout_ms=1000,
        http_port=0,
        admin_token=TOKEN,
    )


def test_cluster_nodes_metrics_and_forwarded_decisions(
    make_broker: BrokerFactory, redis_server: LocalServer, clients: Clients
) -> None:
    a = start_node(make_broker, redis_server, "a")
    b = start_node(make_broker, redis_server, "b")
    api_a, api_b = AdminApi(a), AdminApi(b)

    def node_ids() -> list[str]:
        return [record["node_id"] for record in api_a.get("/api/v1/nodes")[1]["nodes"]]

    wait_until(lambda: node_ids() == ["a", "b"], what="node b in a's list")
    consumer = clients.connect(b, "consumer")
    consumer.sub("orders", 1)
    producer = clients.connect(a, "producer")
    wait_until(lambda: api_b.get("/api/v1/nodes")[1]["nodes"][1]["connections"] == 1)

    publish_half_message(producer, "orders", b"held on a", "tx-1", "shop")
    assert [t["transaction_id"] for t in api_a.get("/api/v1/transactions")[1]["items"]] == ["tx-1"]
    assert api_b.get("/api/v1/transactions")[1]["total"] == 0  # lists are node-local
    status, answer = api_b.post("/api/v1/transactions/tx-1/commit")
    assert (status, answer) == (202, {"transaction_id": "tx-1", "forwarded": "commit"})
    consumer.wait_for_payload(b"held on a")

    _, _, body = request("GET", http_base(a) + "/metrics")
    metrics = body.decode()
    assert "roost_cluster_nodes 2.0" in metrics
    forwarded = next(
        line
        for line in metrics.splitlines()
        if line.startswith("roost_cluster_forwarded_messages_total")
    )
    assert float(forwarded.split()[1]) >= 1
