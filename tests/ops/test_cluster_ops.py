"""Operations on a two-node cluster (in-process nodes, a real Valkey): the nodes list comes
from heartbeats, the transactions list is cluster-wide, /metrics exports the forwarding
counters, and a decision posted to the node that does not hold a transaction reaches the
one that does."""

from __future__ import annotations

from adminhttp import TOKEN, AdminApi, http_base, request
from brokerthread import BrokerFactory, RunningBroker
from paho_helpers import Clients, code_of, publish_half_message, wait_until
from roost.cluster.localserver import LocalServer
from roost.errors import ReasonCode


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
    # The list is cluster-wide: b shows a's transaction, naming its node
    listed = api_b.get("/api/v1/transactions")[1]
    assert [(t["transaction_id"], t["node"]) for t in listed["items"]] == [("tx-1", "a")]
    assert listed["unreachable"] == []
    assert api_b.get("/api/v1/transactions?scope=node")[1]["total"] == 0
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


def test_lists_cover_every_node_and_requests_reach_the_node_that_has_it(
    make_broker: BrokerFactory, redis_server: LocalServer, clients: Clients
) -> None:
    a = start_node(make_broker, redis_server, "a")
    b = start_node(make_broker, redis_server, "b")
    api_a = AdminApi(a)
    wait_until(
        lambda: [bool(n["http"]) for n in api_a.get("/api/v1/nodes")[1]["nodes"]] == [True, True],
        what="b's HTTP listener in its heartbeat",
    )
    on_a = clients.connect(a, "lamp/1")
    on_a.sub("home/#", 1)
    on_b = clients.connect(b, "lamp/2")
    on_b.sub("garden/#", 1)
    gone = clients.connect(b, "gone", session_expiry=300)
    gone.sub("garden/soil", 1)
    gone.stop()
    b.wait_offline("gone")

    def listed(path: str) -> list[tuple[str, str]]:
        return [(item["client_id"], item["node"]) for item in api_a.get(path)[1]["items"]]

    assert listed("/api/v1/clients") == [("lamp/1", "a"), ("lamp/2", "b")]
    assert listed("/api/v1/clients?offset=1&limit=1") == [("lamp/2", "b")]
    assert api_a.get("/api/v1/clients?offset=1&limit=1")[1]["total"] == 2
    assert listed("/api/v1/clients?q=2") == [("lamp/2", "b")]
    assert listed("/api/v1/clients?scope=node") == [("lamp/1", "a")]
    assert listed("/api/v1/sessions?connected=false") == [("gone", "b")]
    subscriptions = api_a.get("/api/v1/subscriptions")[1]["items"]
    assert [(s["topic_filter"], s["client_id"], s["node"]) for s in subscriptions] == [
        ("garden/#", "lamp/2", "b"),
        ("garden/soil", "gone", "b"),
        ("home/#", "lamp/1", "a"),
    ]

    # One client or session is looked up on the node that has it
    status, details = api_a.get("/api/v1/clients/lamp%2F2")
    assert status == 200 and details["subscribed"][0]["topic_filter"] == "garden/#"
    assert api_a.get("/api/v1/clients/nobody")[0] == 404
    status, answer = api_a.post("/api/v1/clients/lamp%2F2/kick", {"reason": "moving it"})
    assert status == 200 and answer["reason"] == "moving it"
    wait_until(lambda: bool(on_b.disconnects), what="DISCONNECT at the client on b")
    assert code_of(on_b.disconnects[0]) == ReasonCode.ADMINISTRATIVE_ACTION
    assert api_a.delete("/api/v1/sessions/gone")[0] == 200
    assert "gone" not in b.broker.core.sessions  # type: ignore[union-attr]

    # A node whose HTTP listener does not answer is named, the others still listed
    http_b = b.broker.http
    assert http_b is not None
    b.call(http_b.stop())
    page = api_a.get("/api/v1/clients")[1]
    assert page["unreachable"] == ["b"]
    assert [item["client_id"] for item in page["items"]] == ["lamp/1"]


def test_a_node_cut_off_from_redis_is_not_ready_until_it_is_back(
    make_broker: BrokerFactory, redis_server: LocalServer
) -> None:
    node = start_node(make_broker, redis_server, "a")
    api = AdminApi(node)
    assert api.get("/api/v1/ready") == (200, {"ready": True, "reasons": []})
    redis_server.stop()
    wait_until(lambda: api.get("/api/v1/ready")[0] == 503, what="503 once cut off")
    assert api.get("/api/v1/ready")[1] == {
        "ready": False,
        "reasons": ["cut off from the cluster's Redis"],
    }
    assert api.get("/api/v1/health") == (200, {"status": "ok"})  # alive all the same
    redis_server.start()
    wait_until(lambda: api.get("/api/v1/ready")[0] == 200, what="ready again", timeout=15)
