"""A node that stops while a session is on its way to it from another node lets the
transfer finish (within a node timeout) before it leaves: what was routed to the session
meanwhile is stored with it, and reaches the client on the node that adopts the session.
In-process nodes on a real Valkey; the previous owner's answer is held back by a real
subscriber that reads nothing (its inbox reader waits for that subscriber's queue)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from brokerthread import RunningBroker
from clusterfixtures import route_filters
from paho_helpers import Clients, wait_until
from rawmqtt import RawFactory

BACKLOG = 10  # QoS 1 messages for the stalled subscriber: more than its window and queue


def queued(node: RunningBroker, client_id: str) -> int:
    """Deliveries waiting in the queue of ``client_id``'s session on in-process ``node``."""
    core = node.broker.core
    assert core is not None

    def length() -> int:
        session = core.sessions.get(client_id)
        return 0 if session is None else len(session.queue)

    return node.on_loop(length)


def test_a_stopping_node_finishes_a_session_transfer_before_it_leaves(
    make_node: Callable[..., RunningBroker],
    clients: Clients,
    raw: RawFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="roost.cluster")
    # p's inbox reader hands a relayed message over only while its subscribers have room
    # (queue below max_queued_messages / 2), waiting for them up to inbox_hold_ms
    p = make_node("p", max_inflight=1, max_queued_messages=4, inbox_hold_ms=60_000)
    x = make_node("x")
    owner = clients.connect(p, "owner", clean=False, session_expiry=3600)
    owner.sub("t", 1)
    owner.stop()  # the session stays on p, offline
    stalled, _ = raw.connected(p, "stalled")
    stalled.subscribe(1, [("s", 1)])  # and never acknowledges nor reads
    wait_until(lambda: route_filters(x, "p") == {"s", "t"}, what="p's routes at x")
    publisher = clients.connect(x, "publisher")
    for n in range(BACKLOG):
        publisher.pub("s", b"%d" % n, 1)
    wait_until(lambda: queued(p, "stalled") >= 2, what="p's inbox reader to wait")
    # x takes the session over: it tells p (behind the backlog in p's inbox), holds the
    # session meanwhile and, p being alive, refuses the client for now
    connack = raw(x).connect("owner", clean=False)
    assert connack is not None and connack.name == "CONNACK" and connack.reason_code != 0
    publisher.pub("t", b"held", 1)  # held at x for the session: p let it go, or will
    stopper = threading.Thread(target=x.stop)
    stopper.start()
    wait_until(lambda: "node x waits for 1 session transfers" in caplog.text, what="x to wait")
    stalled.drop()  # p reads on: the take-over, and its answer to x
    stopper.join(20)
    assert not stopper.is_alive()
    assert "unfinished" not in caplog.text

    def resumed() -> bool:
        """Connect as the owner to p, which adopts x's clients once x has left."""
        client = raw(p)
        answer = client.connect("owner", clean=False)
        assert answer is not None and answer.name == "CONNACK", answer
        if answer.reason_code:
            client.drop()
            return False
        delivered = client.recv()
        assert (delivered.name, delivered.topic, delivered.payload) == ("PUBLISH", "t", b"held")
        return True

    wait_until(resumed, timeout=20, what="the session to resume on p")
