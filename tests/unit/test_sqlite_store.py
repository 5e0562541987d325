"""SqliteStore on a real file: batching (what is saved and completed within one batch never
reaches the disk), sessions read back one at a time, sessions deleted without sweeping the
message table."""

from __future__ import annotations

import asyncio
from pathlib import Path

from roost.message import Message
from roost.session import Delivery, OutboundState, Session, SubscriptionOptions
from store_helpers import commit, count, open_store, orphan_messages, query, stored_deliveries
from store_scenarios import described, persistent, save_rich_session


def delivery(seq: int, message: Message) -> Delivery:
    item = Delivery(message, 1, False)
    item.seq = seq
    return item


def log_delivery_inserts(data_dir: Path) -> None:
    """Make the database file keep the seq of every delivery row ever inserted into it."""
    query(data_dir, "CREATE TABLE inserted (seq INTEGER)")
    query(
        data_dir,
        "CREATE TRIGGER log_insert AFTER INSERT ON deliveries"
        " BEGIN INSERT INTO inserted VALUES (NEW.seq); END",
    )


# -- batching -------------------------------------------------------------------------------


def test_delivery_acknowledged_before_the_batch_is_never_written(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    open_store(tmp_path, loop).close()
    log_delivery_inserts(tmp_path)
    store = open_store(tmp_path, loop)
    message = Message("t", b"payload", 1, False)
    done, pending = delivery(1, message), delivery(2, message)
    store.save_delivery("c", done)
    store.update_delivery("c", done, OutboundState.AWAITING_PUBACK, 7)
    store.save_delivery("c", pending)
    store.delete_delivery("c", done)
    commit(store, loop)
    assert stored_deliveries(tmp_path) == [("c", 2)]
    assert query(tmp_path, "SELECT seq FROM inserted") == []  # listed in its message's row
    assert count(tmp_path, "messages") == 1
    store.close()


def test_close_writes_what_is_pending(tmp_path: Path, loop: asyncio.AbstractEventLoop) -> None:
    store = open_store(tmp_path, loop)
    store.save_delivery("c", delivery(1, Message("t", b"payload", 1, False)))
    store.close()  # the loop never ran: nothing was handed to the writer
    assert count(tmp_path, "deliveries") == 1
    assert count(tmp_path, "messages") == 1


def test_message_row_goes_with_its_last_delivery(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop)
    message = Message("t", b"payload", 1, False)
    first = delivery(1, message)
    store.save_delivery("c", first)
    store.update_delivery("c", first, OutboundState.AWAITING_PUBACK, 3)
    store.close()
    assert count(tmp_path, "messages") == 1

    store = open_store(tmp_path, loop)
    assert store.load(0.0).sessions == []  # no session row: the delivery is an orphan for load
    store.delete_delivery("c", first)
    store.close()
    assert count(tmp_path, "deliveries") == 0
    assert count(tmp_path, "messages") == 0


# -- one session at a time ------------------------------------------------------------------


def test_load_session_reads_one_session_as_load_does(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop)
    saved = described(save_rich_session(store))
    other = persistent("other", store)
    other.subscribe("x", SubscriptionOptions(1))
    other.enqueue(Delivery(Message("x", b"not mine", 1, False), 1, False), 10, now=0.0)
    other.receive_qos2(3)
    store.close()

    store = open_store(tmp_path, loop)
    loaded = store.load_session("rich")
    assert loaded is not None
    assert described(loaded) == saved
    assert loaded.store is store  # ready to be attached: changes are recorded
    by_load = {session.client_id: session for session in store.load(0.0).sessions}
    assert described(by_load["rich"]) == saved
    store.close()


def test_load_session_of_an_unknown_client_is_none(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop)
    persistent("known", store)
    store.close()
    store = open_store(tmp_path, loop)
    assert store.load_session("unknown") is None
    assert store.load_session("known") is not None
    store.close()


# -- deleting sessions ----------------------------------------------------------------------


def share(message: Message, *sessions: Session) -> list[Delivery]:
    """Queue ``message`` for each of ``sessions`` (offline: stored as queued)."""
    deliveries = [Delivery(message, 1, False) for _ in sessions]
    for session, queued in zip(sessions, deliveries, strict=True):
        session.enqueue(queued, 10, now=0.0)
    return deliveries


def acknowledge(session: Session) -> None:
    """Send the head of the queue and complete it, as a PUBACK would."""
    packet_id = session.allocate_packet_id()
    session.send(session.dequeue(), packet_id)
    session.complete(packet_id, OutboundState.AWAITING_PUBACK)


def test_shared_message_stays_until_its_last_session_is_done(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop)
    leaving, staying = persistent("leaving", store), persistent("staying", store)
    share(Message("t", b"shared", 1, False), leaving, staying)
    commit(store, loop)
    assert stored_deliveries(tmp_path) == [("leaving", 1), ("staying", 1)]

    leaving.forget()
    commit(store, loop)
    assert stored_deliveries(tmp_path) == [("staying", 1)]
    assert count(tmp_path, "messages") == 1
    assert orphan_messages(tmp_path) == 0

    acknowledge(staying)
    commit(store, loop)
    assert stored_deliveries(tmp_path) == []
    assert count(tmp_path, "messages") == 0
    store.close()


def test_deleting_a_session_takes_its_own_messages_and_no_others(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop)
    leaving, staying = persistent("leaving", store), persistent("staying", store)
    leaving.send(Delivery(Message("t", b"sent", 1, False), 1, False), 1)
    share(Message("t", b"queued", 1, False), leaving)
    share(Message("t", b"kept", 1, False), staying)
    commit(store, loop)
    # A message row no delivery holds: a sweep of the table would remove it.
    query(tmp_path, "INSERT INTO messages VALUES (999, 'x', x'', 1, 0, x'', '', NULL, NULL)")

    leaving.forget()
    commit(store, loop)
    assert query(tmp_path, "SELECT payload FROM messages ORDER BY id") == [(b"kept",), (b"",)]
    assert stored_deliveries(tmp_path) == [("staying", 1)]
    store.close()


def test_session_deleted_within_the_batch_that_saved_it_writes_nothing_of_its_own(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop)
    leaving, staying = persistent("leaving", store), persistent("staying", store)
    share(Message("t", b"shared", 1, False), leaving, staying)
    share(Message("t", b"alone", 1, False), leaving)
    leaving.set_expiry_interval(0, store)  # no longer persistent: leaves the store
    commit(store, loop)
    assert query(tmp_path, "SELECT client_id FROM sessions") == [("staying",)]
    assert stored_deliveries(tmp_path) == [("staying", 1)]
    assert query(tmp_path, "SELECT payload FROM messages") == [(b"shared",)]
    store.close()


def test_sessions_loaded_one_by_one_keep_the_message_they_share(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop)
    share(Message("t", b"shared", 1, False), persistent("a", store), persistent("b", store))
    store.close()

    store = open_store(tmp_path, loop)
    first, second = store.load_session("a"), store.load_session("b")
    assert first is not None and second is not None
    assert first.queue[0].message is not second.queue[0].message  # read separately
    acknowledge(first)
    commit(store, loop)
    assert count(tmp_path, "messages") == 1
    assert orphan_messages(tmp_path) == 0
    acknowledge(second)
    commit(store, loop)
    assert count(tmp_path, "messages") == 0
    store.close()


def test_owners_are_read_back_anonymous_named_or_unknown(
    tmp_path: Path, loop: asyncio.AbstractEventLoop
) -> None:
    store = open_store(tmp_path, loop)
    for client_id, owner in (("anonymous", None), ("empty", ""), ("named", "alice")):
        session = persistent(client_id, store)
        session.set_owner(owner)
        session.save()
    persistent("unknown", store)  # never given an owner
    store.close()
    store = open_store(tmp_path, loop)
    loaded = {s.client_id: (s.identified, s.username) for s in store.load(0.0).sessions}
    store.close()
    assert loaded == {
        "anonymous": (True, None),
        "empty": (True, ""),
        "named": (True, "alice"),
        "unknown": (False, None),
    }
