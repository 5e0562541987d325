"""``GET /api/v1/assign`` on real nodes: a node alone, and the client-hash policy."""

from __future__ import annotations

from pathlib import Path

from accessproc import ACCESS_FLAGS, AccessCluster, assign_url, get_json
from brokerproc import BrokerProcess


def test_a_node_alone_assigns_itself(tmp_path: Path) -> None:
    node = BrokerProcess(tmp_path, *ACCESS_FLAGS).start()
    try:
        status, answer = get_json(assign_url(node, "anyone"))
        assert status == 200
        assert answer == {
            "node_id": f"127.0.0.1:{node.port}",
            "host": "127.0.0.1",
            "port": node.port,
        }
    finally:
        node.kill()


def test_client_hash_sends_each_client_id_to_one_node(cluster: AccessCluster) -> None:
    """Every node gives the same answer for a client id, every time; ids spread."""
    nodes = cluster.start(3, "--assign-policy", "client-hash")
    chosen: dict[str, set[str]] = {}
    for index in range(40):
        client_id = f"device-{index}"
        for node in nodes * 2:
            status, answer = get_json(assign_url(node, client_id))
            assert status == 200
            chosen.setdefault(client_id, set()).add(answer["node_id"])
    assert all(len(answers) == 1 for answers in chosen.values()), chosen
    assert {node for answers in chosen.values() for node in answers} == {"n0", "n1", "n2"}
    status, answer = get_json(assign_url(nodes[0]))
    assert status == 400 and "client id" in answer["error"]
