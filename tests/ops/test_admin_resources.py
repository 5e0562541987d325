"""The admin API on a real broker: what it lists is what paho clients did, and what it
changes (kick, delete, decide) reaches the clients as MQTT."""

from __future__ import annotations

from adminhttp import AdminApi
from brokerthread import RunningBroker
from paho_helpers import Clients, code_of, publish_half_message, wait_until
from roost.errors import ReasonCode


def test_clients_list_filter_and_paging(
    node: RunningBroker, api: AdminApi, clients: Clients
) -> None:
    for name in ("sensor-1", "sensor-2", "sensor-3", "panel"):
        clients.connect(node, name)
    status, page = api.get("/api/v1/clients?q=sensor&offset=1&limit=1")
    assert status == 200
    assert page["total"] == 3 and page["offset"] == 1 and page["limit"] == 1
    assert [item["client_id"] for item in page["items"]] == ["sensor-2"]
    item = page["items"][0]
    assert item["connected"] is True and item["protocol"] == "5.0"
    assert item["peer"].startswith("127.0.0.1:")
    assert api.get("/api/v1/clients?limit=x")[0] == 400


def test_client_details_and_kick(node: RunningBroker, api: AdminApi, clients: Clients) -> None:
    conn = clients.connect(node, "lamp/1", session_expiry=300)
    conn.sub("home/#", 1)
    status, details = api.get("/api/v1/clients/lamp%2F1")
    assert status == 200
    assert details["client_id"] == "lamp/1" and details["expiry_interval"] == 300
    assert [s["topic_filter"] for s in details["subscribed"]] == ["home/#"]
    assert details["subscribed"][0]["qos"] == 1

    status, answer = api.post("/api/v1/clients/lamp%2F1/kick", {"reason": "maintenance"})
    assert status == 200 and answer["kicked"] is True
    wait_until(lambda: bool(conn.disconnects), what="DISCONNECT at the client")
    assert code_of(conn.disconnects[0]) == ReasonCode.ADMINISTRATIVE_ACTION
    node.wait_offline("lamp/1")
    assert api.get("/api/v1/clients/lamp%2F1")[0] == 404
    assert api.post("/api/v1/clients/lamp%2F1/kick")[0] == 404
    # the persistent session stays, offline
    status, page = api.get("/api/v1/sessions?connected=false")
    assert [item["client_id"] for item in page["items"]] == ["lamp/1"]
    assert 290 < page["items"][0]["expires_in"] <= 300


def test_delete_an_offline_session_only(
    node: RunningBroker, api: AdminApi, clients: Clients
) -> None:
    online = clients.connect(node, "online", session_expiry=300)
    gone = clients.connect(node, "gone", session_expiry=300)
    gone.sub("jobs", 1)
    gone.client.disconnect()
    node.wait_offline("gone")
    assert api.delete("/api/v1/sessions/online")[0] == 409
    assert api.delete("/api/v1/sessions/nobody")[0] == 404
    assert api.delete("/api/v1/sessions/gone") == (200, {"client_id": "gone", "deleted": True})
    _status, page = api.get("/api/v1/sessions")
    assert [item["client_id"] for item in page["items"]] == ["online"]
    assert api.get("/api/v1/subscriptions?client_id=gone")[1]["total"] == 0
    assert online.client.is_connected()


def test_subscriptions_all_and_by_client(
    node: RunningBroker, api: AdminApi, clients: Clients
) -> None:
    a = clients.connect(node, "a")
    b = clients.connect(node, "b")
    a.sub("x/+", 1)
    a.sub("y", 0)
    b.sub("x/+", 2)
    status, page = api.get("/api/v1/subscriptions")
    assert status == 200
    assert [(s["topic_filter"], s["client_id"]) for s in page["items"]] == [
        ("x/+", "a"),
        ("x/+", "b"),
        ("y", "a"),
    ]
    status, page = api.get("/api/v1/subscriptions?client_id=b")
    assert [(s["topic_filter"], s["qos"]) for s in page["items"]] == [("x/+", 2)]


def test_retained_list_and_delete(node: RunningBroker, api: AdminApi, clients: Clients) -> None:
    publisher = clients.connect(node, "pub")
    publisher.pub("status/a", b"on", qos=1, retain=True)
    publisher.pub("status/b", b"\xff\x00", qos=1, retain=True)
    publisher.pub("other", b"x", qos=1, retain=True)
    status, page = api.get("/api/v1/retained?filter=status/%2B")
    assert status == 200
    assert [(m["topic"], m["payload"], m["encoding"]) for m in page["items"]] == [
        ("status/a", "on", "utf-8"),
        ("status/b", "/wA=", "base64"),
    ]
    assert api.get("/api/v1/retained?filter=a/%23/b")[0] == 400
    assert api.delete("/api/v1/retained?topic=status/a")[0] == 200
    assert api.delete("/api/v1/retained?topic=status/a")[0] == 404
    late = clients.connect(node, "late")
    late.sub("status/#")
    late.wait_for_payload(b"\xff\x00")
    assert api.get("/api/v1/retained")[1]["total"] == 2  # status/b and other


def test_pending_transactions_decided_through_the_api(
    node: RunningBroker, api: AdminApi, clients: Clients
) -> None:
    consumer = clients.connect(node, "consumer")
    consumer.sub("orders", 1)
    producer = clients.connect(node, "producer")
    for transaction_id in ("t-commit", "t-rollback"):
        publish_half_message(producer, "orders", transaction_id.encode(), transaction_id, "orders")
    status, page = api.get("/api/v1/transactions")
    assert status == 200
    assert [(t["transaction_id"], t["group"], t["topic"]) for t in page["items"]] == [
        ("t-commit", "orders", "orders"),
        ("t-rollback", "orders", "orders"),
    ]
    assert api.post("/api/v1/transactions/t-commit/commit") == (
        200,
        {"transaction_id": "t-commit", "outcome": "committed"},
    )
    assert api.post("/api/v1/transactions/t-rollback/rollback")[1]["outcome"] == "rolled back"
    consumer.wait_for_payload(b"t-commit")
    assert api.post("/api/v1/transactions/t-commit/rollback")[0] == 409
    assert api.post("/api/v1/transactions/nothing/commit")[0] == 404
    assert api.get("/api/v1/transactions")[1]["total"] == 0
    assert consumer.by_payload(b"t-rollback") == []


def test_nodes_and_stats_of_a_node_alone(
    node: RunningBroker, api: AdminApi, clients: Clients
) -> None:
    clients.connect(node, "one")
    status, answer = api.get("/api/v1/nodes")
    assert status == 200
    [record] = answer["nodes"]
    assert record["self"] is True and record["connections"] == 1
    assert record["node_id"] == f"127.0.0.1:{node.port}"
    status, figures = api.get("/api/v1/stats")
    assert figures["clients_connected"] == 1 and figures["connections_total"] == 1
    assert figures["cluster"] is None
