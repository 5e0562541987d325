"""The chat demo (examples/chat) on two real nodes: alice on n0 and bob on n1 talk, see each
other come and go, and bob gets what alice sent while he was away."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from accessproc import AccessCluster, http_port
from brokerproc import BrokerProcess
from chatproc import ChatProcess


@pytest.fixture
def chats() -> Iterator[list[ChatProcess]]:
    """The chat processes a test starts, killed at teardown if still running."""
    started: list[ChatProcess] = []
    yield started
    for chat in started:
        chat.kill()


def direct(node: BrokerProcess) -> tuple[str, ...]:
    return ("--host", node.host, "--port", str(node.port))


def test_alice_and_bob_chat_across_nodes(cluster: AccessCluster, chats: list[ChatProcess]) -> None:
    n0, n1 = cluster.start(2)
    alice = ChatProcess("alice", ["bob"], *direct(n0))
    chats.append(alice)
    alice.expect(rf"^\* alice connected to node {n0.host}:{n0.port} ")
    # alice is counted on n0: the least-connections assignment now sends bob to n1
    cluster.wait_connections(1)
    assign = ("--assign", f"http://127.0.0.1:{http_port(n0)}")
    bob = ChatProcess("bob", ["alice"], *assign)
    chats.append(bob)
    bob.expect(r"^\* bob connected to node n1 ")
    alice.expect(r"^\* bob is online on node n1$")
    bob.expect(rf"^\* alice is online on node {n0.host}:{n0.port}$")

    alice.type("@bob hello bob")
    alice.expect(r"^\* sent to bob$")
    bob.expect(r"^<alice> hello bob$")
    bob.type("@alice hi alice, I am on n1")
    bob.expect(r"^\* sent to alice$")
    alice.expect(r"^<bob> hi alice, I am on n1$")

    assert bob.quit() == 0
    alice.expect(r"^\* bob is offline \(was on node n1\)$")
    alice.type("@bob are you there?")
    alice.expect(r"^\* sent to bob$")
    alice.type("@bob call me")
    alice.expect(r"^\* sent to bob$")

    back = ChatProcess("bob", ["alice"], *direct(n1))
    chats.append(back)
    back.expect(r"^<alice> are you there\?$")
    back.expect(r"^<alice> call me$")
    alice.expect(rf"^\* bob is online on node {n1.host}:{n1.port}$")
    assert alice.quit() == 0
    back.expect(rf"^\* alice is offline \(was on node {n0.host}:{n0.port}\)$")
