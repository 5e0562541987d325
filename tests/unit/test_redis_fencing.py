"""Fencing of a cluster node's session writes, on a real Valkey server: the RedisStore of
node "A" writes a client id's keys only while A owns it under its claim (or a later one
of its own), or while it hands the session over from that claim; otherwise Redis refuses
them all, the node is told before the acknowledgements of that batch run, and the other
writes of the batch land. The owner record is claimed with the scripts the nodes run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from redis_store_helpers import close, open_store
from roost.cluster import keys, scripts
from roost.cluster.localserver import LocalServer
from roost.message import Message
from roost.session import Session, SubscriptionOptions
from roost.store.redis import RedisStore
from store_helpers import commit
from store_scenarios import persistent


@pytest.fixture
def peek(redis_server: LocalServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


class NodeA:
    """The store of node A, and what it was told of refused writes, in order with the
    acknowledgements of their batches."""

    def __init__(self, server: LocalServer, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.store: RedisStore = open_store(server, loop)
        self.events: list[str] = []
        self.store.fence_writes("A", lambda client_ids: self.events.append(f"refused {client_ids}"))

    def owned(self, peek: redis.Redis, client_id: str) -> tuple[Session, int]:
        """A claims ``client_id`` (owned by no node before) and keeps its session,
        written under that claim: the session and the claim's epoch."""
        epoch = claim(peek, client_id, "A", "")
        self.store.fence(client_id, epoch)
        return persistent(client_id, self.store), epoch

    def commit(self, label: str) -> None:
        self.store.after_commit(lambda: self.events.append(f"acknowledged {label}"))
        commit(self.store, self.loop)


@pytest.fixture
def node_a(redis_server: LocalServer, loop: asyncio.AbstractEventLoop) -> Iterator[NodeA]:
    node = NodeA(redis_server, loop)
    yield node
    close(node.store, loop)


def claim(peek: redis.Redis, client_id: str, node: str, previous: str) -> int:
    """``node`` claims ``client_id`` from ``previous`` ('' for no owner); the new epoch."""
    epoch, found = peek.eval(scripts.CLAIM_CLIENT, 1, keys.owner(client_id), node, previous, "")
    assert epoch, f"{node} could not claim {client_id} from {previous!r}: it is {found!r}'s"
    return int(epoch)


def end_handover(peek: redis.Redis, client_id: str, node: str, epoch: int) -> None:
    peek.eval(scripts.END_HANDOVER, 1, keys.owner(client_id), node, epoch)


def subscriptions(peek: redis.Redis, client_id: str) -> set[bytes]:
    return set(peek.hkeys(keys.client(client_id, "subs")))


def test_the_owner_writes_and_a_node_that_lost_the_client_id_cannot(
    node_a: NodeA, peek: redis.Redis
) -> None:
    session, _ = node_a.owned(peek, "x")
    session.subscribe("mine", SubscriptionOptions(1))
    node_a.commit("first")
    assert subscriptions(peek, "x") == {b"mine"}

    end_handover(peek, "x", "B", claim(peek, "x", "B", "A"))  # B took it and has it all
    session.subscribe("stale", SubscriptionOptions(1))
    session.unsubscribe("mine")
    node_a.commit("second")

    assert subscriptions(peek, "x") == {b"mine"}  # nothing of the stale owner's
    assert node_a.events == ["acknowledged first", "refused ['x']", "acknowledged second"]


def test_a_node_handing_a_session_over_writes_until_the_new_owner_ends_the_handover(
    node_a: NodeA, peek: redis.Redis
) -> None:
    session, _ = node_a.owned(peek, "x")
    new_epoch = claim(peek, "x", "B", "A")  # A is told to let go: its last writes land
    session.subscribe("last", SubscriptionOptions(1))
    node_a.commit("last writes")
    assert subscriptions(peek, "x") == {b"last"}

    end_handover(peek, "x", "B", new_epoch)
    session.subscribe("too late", SubscriptionOptions(1))
    node_a.commit("later")
    assert subscriptions(peek, "x") == {b"last"}
    assert node_a.events == ["acknowledged last writes", "refused ['x']", "acknowledged later"]


def test_a_later_claim_of_the_same_node_keeps_its_earlier_writes_valid(
    node_a: NodeA, peek: redis.Redis
) -> None:
    """A client that reconnects to the node that has it moves the epoch on while writes
    recorded under the earlier claim may still be on their way."""
    session, _ = node_a.owned(peek, "x")
    session.subscribe("before", SubscriptionOptions(1))
    claim(peek, "x", "A", "A")
    node_a.commit("both claims")
    assert subscriptions(peek, "x") == {b"before"}
    assert node_a.events == ["acknowledged both claims"]


def test_refused_writes_leave_the_other_writes_of_their_batch_in_place(
    node_a: NodeA, peek: redis.Redis
) -> None:
    lost, _ = node_a.owned(peek, "lost")
    kept, _ = node_a.owned(peek, "kept")
    end_handover(peek, "lost", "B", claim(peek, "lost", "B", "A"))
    lost.subscribe("a", SubscriptionOptions(1))
    kept.subscribe("b", SubscriptionOptions(1))
    node_a.store.save_retained(Message("shared/topic", b"r", 1, True))
    unowned = persistent("unowned", node_a.store)  # not fenced: written as it is
    unowned.subscribe("c", SubscriptionOptions(1))
    node_a.commit("the batch")

    assert subscriptions(peek, "lost") == set()
    assert subscriptions(peek, "kept") == {b"b"}
    assert subscriptions(peek, "unowned") == {b"c"}
    assert peek.hexists(keys.retained(), "shared/topic")
    assert node_a.events == ["refused ['lost']", "acknowledged the batch"]


def test_releasing_forgets_the_owner_record_only_under_the_same_claim(
    node_a: NodeA, peek: redis.Redis
) -> None:
    session, first = node_a.owned(peek, "x")
    session.subscribe("t", SubscriptionOptions(1))
    claim(peek, "x", "A", "A")  # claimed again: the release of the first claim is stale
    node_a.store.release_owner("x")
    node_a.commit("stale release")
    assert peek.hget(keys.owner("x"), "node") == b"A"

    node_a.store.fence("x", first + 1)
    node_a.store.release_owner("x")
    node_a.commit("release")
    assert not peek.exists(keys.owner("x"))
    assert subscriptions(peek, "x") == {b"t"}  # the session stays for the next owner
    assert node_a.events == ["acknowledged stale release", "acknowledged release"]


def test_a_release_of_a_client_id_another_node_took_is_no_refused_write(
    node_a: NodeA, peek: redis.Redis
) -> None:
    """Nothing to release, nothing lost: the node is not told of it."""
    node_a.store.fence("x", claim(peek, "x", "A", ""))
    end_handover(peek, "x", "B", claim(peek, "x", "B", "A"))
    node_a.store.release_owner("x")
    node_a.commit("release")
    assert peek.hget(keys.owner("x"), "node") == b"B"
    assert node_a.events == ["acknowledged release"]
