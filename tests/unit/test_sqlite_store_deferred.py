"""QoS 1 deliveries listed in their message's row (roost.store.deferred) on a real file: the
commit that writes the message makes them durable, a store opened after a crash rebuilds
them in order, a delivery still unfinished after the delay gets a row of its own with its
state and packet identifier, and closing gives every listed delivery its row."""

from __future__ import annotations

import asyncio
from pathlib import Path

from roost.message import Message
from roost.session import Delivery, OutboundState, Session, SubscriptionOptions
from roost.store.sqlite import SqliteStore
from store_helpers import commit, count, open_store, query, run_until, stored_deliveries
from store_scenarios import described, persistent

NEVER = 3600.0  # a delay no test waits for: listed deliveries stay listed


def subscriber(
    store_path: Path, loop: asyncio.AbstractEventLoop
) -> tuple[SqliteStore, Session, Session]:
    """A store and its sessions "sub" and "other", as the broker would record them."""
    store = open_store(store_path, loop, defer_seconds=NEVER)
    sub, other = persistent("sub", store), persistent("other", store)
    sub.subscribe("t/#", SubscriptionOptions(2, identifier=5))
    other.subscribe("t/#", SubscriptionOptions(1))
    return store, sub, other


def sessions_reopened(store_path: Path, loop: asyncio.AbstractEventLoop) -> dict[str, Session]:
    """The sessions a store opened again on ``store_path`` loads, by client id (that store
    is closed then: what loading rewrote is on file)."""
    reopened = open_store(store_path, loop)
    loaded = {session.client_id: session for session in reopened.load(0.0).sessions}
    reopened.close()
    return loaded


def test_listed_deliveries_are_rebuilt_in_order_after_a_crash(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store, sub, other = subscriber(tmp_path, loop)
    qos2 = Delivery(Message("t/1", b"one", 2, False), 2, False, (5,))
    sub.send(qos2, sub.allocate_packet_id())  # QoS 2 keeps a row of its own
    sent = Delivery(Message("t/2", b"two", 1, False), 1, False, (5,))
    sub.send(sent, sub.allocate_packet_id())  # in flight to a connected subscriber
    shared = Message("t/3", b"three", 1, True)
    sub.enqueue(Delivery(shared, 1, True, (5,)), 10, now=0.0)
    other.enqueue(Delivery(shared, 1, False), 10, now=0.0)
    commit(store, loop)
    assert query(tmp_path, "SELECT seq FROM deliveries") == [(1,)]  # only the QoS 2 one
    other_packet = other.allocate_packet_id()
    other.send(other.dequeue(), other_packet)
    other.complete(other_packet, OutboundState.AWAITING_PUBACK)  # done: off the list
    commit(store, loop)
    assert stored_deliveries(tmp_path) == [("sub", 1), ("sub", 2), ("sub", 3)]
    expected = described(sub)

    # The first store is never closed, as after SIGKILL.
    loaded = sessions_reopened(tmp_path, loop)
    rebuilt = described(loaded["sub"])
    # Back in order; the one that was in flight is queued again (its row never existed).
    assert rebuilt["inflight"] == [expected["inflight"][0]]
    assert rebuilt["queue"] == [expected["inflight"][1][2], *expected["queue"]]
    assert rebuilt["next"][0] == expected["next"][0]  # seqs go on after the last one
    assert list(loaded["other"].queue) == []
    # Rows of their own from now on: the lists are emptied.
    assert query(tmp_path, "SELECT count(*) FROM messages WHERE recipients IS NOT NULL") == [(0,)]
    assert query(tmp_path, "SELECT client_id, seq FROM deliveries ORDER BY seq") == [
        ("sub", 1),
        ("sub", 2),
        ("sub", 3),
    ]
    store.close()


def test_a_delivery_unfinished_after_the_delay_gets_its_own_row(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop, defer_seconds=0.05)
    session = persistent("sub", store)
    session.send(Delivery(Message("t", b"slow", 1, False), 1, False), 7)
    commit(store, loop)
    run_until(loop, lambda: count(tmp_path, "deliveries") == 1, what="the delivery's row")
    assert query(tmp_path, "SELECT seq, state, packet_id FROM deliveries") == [
        (1, OutboundState.AWAITING_PUBACK, 7)
    ]

    session.complete(7, OutboundState.AWAITING_PUBACK)
    commit(store, loop)
    assert count(tmp_path, "deliveries") == 0
    assert count(tmp_path, "messages") == 0
    store.close()


def test_close_gives_listed_deliveries_their_rows(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store, sub, _ = subscriber(tmp_path, loop)
    sub.next_packet_id = 42
    sub.send(Delivery(Message("t/1", b"sent", 1, False), 1, False, (5,)), sub.allocate_packet_id())
    sub.enqueue(Delivery(Message("t/2", b"queued", 1, False), 1, False, (5,)), 10, now=0.0)
    expected = described(sub)
    store.close()

    loaded = sessions_reopened(tmp_path, loop)
    assert described(loaded["sub"]) == expected  # in flight again under packet id 42


def test_a_listed_delivery_of_a_session_that_is_gone_is_not_rebuilt(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    open_store(tmp_path, loop).close()
    query(
        tmp_path,
        "INSERT INTO messages VALUES (1, 't', x'', 1, 0, x'00', '', NULL, ?)",
        "ghost\x001\x00\x00",
    )
    store = open_store(tmp_path, loop)
    assert count(tmp_path, "deliveries") == 0
    assert count(tmp_path, "messages") == 0  # nothing holds it any more
    store.close()


def test_a_message_saved_again_after_its_listed_delivery_finished_lists_nothing_stale(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store, sub, other = subscriber(tmp_path, loop)
    retained = Message("t/r", b"kept", 1, True)  # kept in memory: delivered again later
    packet_id = sub.allocate_packet_id()
    sub.send(Delivery(retained, 1, False, (5,)), packet_id)
    commit(store, loop)
    sub.complete(packet_id, OutboundState.AWAITING_PUBACK)
    other.enqueue(Delivery(retained, 1, True), 10, now=0.0)  # within the same batch
    commit(store, loop)
    assert stored_deliveries(tmp_path) == [("other", 1)]

    loaded = sessions_reopened(tmp_path, loop)  # after a crash
    assert list(loaded["sub"].queue) == []
    assert [d.message.payload for d in loaded["other"].queue] == [b"kept"]
    store.close()


def test_finished_messages_are_deleted_and_no_others(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store, sub, _ = subscriber(tmp_path, loop)
    for index in range(1, 8):
        sub.send(Delivery(Message("t", b"%d" % index, 1, False), 1, False), index)
    commit(store, loop)
    for packet_id in (1, 2, 4, 6, 7):  # leaves gaps between runs of finished ids
        sub.complete(packet_id, OutboundState.AWAITING_PUBACK)
    commit(store, loop)
    assert query(tmp_path, "SELECT payload FROM messages ORDER BY id") == [(b"3",), (b"5",)]
    assert stored_deliveries(tmp_path) == [("sub", 3), ("sub", 5)]
    store.close()


def test_a_list_updated_then_saved_again_in_one_batch_keeps_its_deliveries(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    """A retained message listed for two sessions: one finishes (its list is to be
    rewritten) and, in the same batch, a third session is given the message again (its
    row is saved again). Both carry the list; the one still listed survives a crash."""
    store, sub, other = subscriber(tmp_path, loop)
    late = persistent("late", store)  # subscribes later
    retained = Message("t/r", b"kept", 1, True)
    sub.enqueue(Delivery(retained, 1, True, (5,)), 10, now=0.0)  # offline: stays listed
    packet_id = other.allocate_packet_id()
    other.send(Delivery(retained, 1, False), packet_id)
    commit(store, loop)
    assert stored_deliveries(tmp_path) == [("other", 1), ("sub", 1)]

    other.complete(packet_id, OutboundState.AWAITING_PUBACK)  # off the list
    late.enqueue(Delivery(retained, 1, True), 10, now=0.0)  # the retained one, on subscribe
    commit(store, loop)
    assert stored_deliveries(tmp_path) == [("late", 1), ("sub", 1)]

    loaded = sessions_reopened(tmp_path, loop)  # after a crash
    assert [d.message.payload for d in loaded["sub"].queue] == [b"kept"]
    store.close()


def test_a_crash_keeps_each_sessions_send_order(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    """A QoS 1 and then a QoS 2 message from one publisher, both in flight to a connected
    subscriber when the broker is killed: on resume the session sends them again in that
    order (what is in flight is resent first, then the queue)."""
    store, sub, _ = subscriber(tmp_path, loop)
    first = Delivery(Message("t/1", b"first", 1, False, origin="pub"), 1, False, (5,))
    sub.send(first, sub.allocate_packet_id())
    second = Delivery(Message("t/1", b"second", 2, False, origin="pub"), 2, False, (5,))
    sub.send(second, sub.allocate_packet_id())
    commit(store, loop)

    loaded = sessions_reopened(tmp_path, loop)  # after a crash
    resumed = loaded["sub"]
    resent = [f.delivery.message.payload for f in resumed.inflight.values()]
    resent += [d.message.payload for d in resumed.queue]
    assert resent == [b"first", b"second"]
    store.close()


def test_a_session_started_clean_does_not_inherit_its_predecessors_listed_deliveries(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    """The old session's listed delivery (seq 1) leaves its message's list in the batch that
    deletes the session; the new session of the same client id, whose first delivery has seq
    1 too, gets only its own after a crash."""
    store, sub, other = subscriber(tmp_path, loop)
    shared = Message("t/s", b"old", 1, False)
    sub.enqueue(Delivery(shared, 1, False, (5,)), 10, now=0.0)
    other.enqueue(Delivery(shared, 1, False), 10, now=0.0)  # keeps the message's row
    commit(store, loop)

    sub.forget()  # clean start
    fresh = persistent("sub", store)
    fresh.enqueue(Delivery(Message("t/n", b"new", 1, False), 1, False), 10, now=0.0)
    commit(store, loop)

    loaded = sessions_reopened(tmp_path, loop)  # after a crash
    assert [(d.seq, d.message.payload) for d in loaded["sub"].queue] == [(1, b"new")]
    assert [d.message.payload for d in loaded["other"].queue] == [b"old"]
    store.close()
