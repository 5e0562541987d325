"""Session: packet identifiers, the queue's drop policy and what its Store ends up holding."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.message import Message
from roost.session import (
    Delivery,
    OutboundState,
    PacketIdsExhausted,
    Session,
    SubscriptionOptions,
)
from roost.store.base import LoadedState, Store
from roost.transactions import HalfMessage, Settled

Row = tuple[str, OutboundState | None, int]  # topic, state (None: queued), packet id


class ContentsStore:
    """A Store that keeps what it is told as a database would: a row per session,
    subscription, delivery and inbound QoS 2 id. An update of a missing row changes nothing
    (like SQL UPDATE), deleting a session deletes what belongs to it. Tests compare the
    contents, i.e. what a restart would find, not the calls that led there; ``writes``
    counts every change asked for (clean sessions must cost none)."""

    def __init__(self) -> None:
        self.sessions: dict[str, int] = {}  # client id -> expiry interval
        self.subscriptions: dict[tuple[str, str], SubscriptionOptions] = {}
        self.deliveries: dict[tuple[str, int], Row] = {}  # (client id, seq) -> row
        self.inbound_qos2: set[tuple[str, int]] = set()
        self.writes = 0

    def load(self, now: float) -> LoadedState:
        return LoadedState()

    def save_session(self, session: Session) -> None:
        self.writes += 1
        self.sessions[session.client_id] = session.expiry_interval

    def delete_session(self, session: Session) -> None:
        client_id = session.client_id
        self.writes += 1
        self.sessions.pop(client_id, None)
        for table in (self.subscriptions, self.deliveries):
            for key in [key for key in table if key[0] == client_id]:
                del table[key]
        self.inbound_qos2 = {key for key in self.inbound_qos2 if key[0] != client_id}

    def save_subscription(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None:
        self.writes += 1
        self.subscriptions[client_id, topic_filter] = options

    def delete_subscription(self, client_id: str, topic_filter: str) -> None:
        self.writes += 1
        self.subscriptions.pop((client_id, topic_filter), None)

    def save_delivery(self, client_id: str, delivery: Delivery) -> None:
        self.writes += 1
        self.deliveries[client_id, delivery.seq] = (delivery.message.topic, None, 0)

    def update_delivery(
        self, client_id: str, delivery: Delivery, state: OutboundState, packet_id: int
    ) -> None:
        self.writes += 1
        key = (client_id, delivery.seq)
        if key in self.deliveries:
            self.deliveries[key] = (delivery.message.topic, state, packet_id)

    def delete_delivery(self, client_id: str, delivery: Delivery) -> None:
        self.writes += 1
        self.deliveries.pop((client_id, delivery.seq), None)

    def save_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        self.writes += 1
        self.inbound_qos2.add((client_id, packet_id))

    def delete_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        self.writes += 1
        self.inbound_qos2.discard((client_id, packet_id))

    def save_retained(self, message: Message) -> None:
        self.writes += 1

    def delete_retained(self, topic: str) -> None:
        self.writes += 1

    def save_transaction(self, half: HalfMessage) -> None:
        self.writes += 1

    def settle_transaction(self, transaction_id: str, outcome: Settled) -> None:
        self.writes += 1

    def after_commit(self, callback: Callable[[], None]) -> None:
        callback()

    def close(self) -> None:
        pass

    def is_empty(self) -> bool:
        return not (self.sessions or self.subscriptions or self.deliveries or self.inbound_qos2)


def delivery(topic: str = "t", qos: int = 1) -> Delivery:
    return Delivery(Message(topic, b"payload", qos, False), qos, False)


def fill_inflight(session: Session, packet_ids: range | list[int]) -> None:
    for packet_id in packet_ids:
        session.send(delivery(), packet_id)


# -- packet identifiers -------------------------------------------------------------------


def test_packet_ids_start_at_one_and_count_up() -> None:
    session = Session("c")
    assert [session.allocate_packet_id() for _ in range(5)] == [1, 2, 3, 4, 5]


def test_packet_ids_skip_identifiers_in_use() -> None:
    session = Session("c")
    fill_inflight(session, [1, 2, 4])
    assert session.allocate_packet_id() == 3
    assert session.allocate_packet_id() == 5


def test_packet_ids_wrap_from_65535_to_1_never_0() -> None:
    session = Session("c")
    session.next_packet_id = 65534
    assert [session.allocate_packet_id() for _ in range(4)] == [65534, 65535, 1, 2]


def test_packet_id_wrap_skips_ids_still_in_use() -> None:
    session = Session("c")
    session.next_packet_id = 65535
    fill_inflight(session, [65535, 1, 2])
    assert session.allocate_packet_id() == 3


@pytest.mark.timeout(10)  # a missing exhaustion check would loop forever
def test_last_free_packet_id_is_found_then_exhausted() -> None:
    session = Session("c")
    fill_inflight(session, [i for i in range(1, 65536) if i != 12345])
    session.next_packet_id = 20000
    assert session.allocate_packet_id() == 12345
    fill_inflight(session, [12345])
    with pytest.raises(PacketIdsExhausted):
        session.allocate_packet_id()


@given(
    start=st.integers(1, 65535),
    in_use=st.sets(st.integers(1, 65535), max_size=50),
    count=st.integers(1, 30),
)
def test_allocated_ids_are_valid_unused_and_distinct(
    start: int, in_use: set[int], count: int
) -> None:
    session = Session("c")
    session.next_packet_id = start
    fill_inflight(session, sorted(in_use))
    seen: set[int] = set()
    for _ in range(count):
        packet_id = session.allocate_packet_id()
        assert 1 <= packet_id <= 65535
        assert packet_id not in session.inflight
        assert packet_id not in seen
        seen.add(packet_id)
        session.send(delivery(), packet_id)


# -- the queue's drop policy --------------------------------------------------------------


def topics(session: Session) -> list[str]:
    return [queued.message.topic for queued in session.queue]


def test_enqueue_below_the_limit_keeps_everything_in_order() -> None:
    session = Session("c")
    for index, qos in enumerate([0, 1, 2, 0]):
        assert session.enqueue(delivery(f"m{index}", qos), limit=4, now=0.0)
    assert topics(session) == ["m0", "m1", "m2", "m3"]
    assert session.queued_qos0 == 2


def test_full_queue_drops_the_oldest_qos0_first() -> None:
    session = Session("c")
    for name, qos in [("a", 1), ("b", 0), ("c", 1), ("d", 0)]:
        assert session.enqueue(delivery(name, qos), limit=4, now=0.0)
    # each is queued, and reported as having cost a drop (the oldest QoS 0)
    assert not session.enqueue(delivery("e", 1), limit=4, now=0.0)
    assert topics(session) == ["a", "c", "d", "e"]
    assert session.queued_qos0 == 1
    assert not session.enqueue(delivery("f", 0), limit=4, now=0.0)
    assert topics(session) == ["a", "c", "e", "f"]
    assert session.queued_qos0 == 1


def test_full_queue_without_qos0_refuses_the_new_message() -> None:
    session = Session("c")
    for name in "abc":
        assert session.enqueue(delivery(name, 1), limit=3, now=0.0)
    assert not session.enqueue(delivery("new1", 1), limit=3, now=0.0)
    assert not session.enqueue(delivery("new0", 0), limit=3, now=0.0)
    assert topics(session) == ["a", "b", "c"]
    assert session.queued_qos0 == 0


def test_zero_limit_refuses_everything() -> None:
    session = Session("c")
    assert not session.enqueue(delivery("a", 0), limit=0, now=0.0)
    assert not session.enqueue(delivery("b", 1), limit=0, now=0.0)
    assert not session.queue


def test_dequeue_keeps_the_qos0_count() -> None:
    session = Session("c")
    session.enqueue(delivery("a", 0), 10, now=0.0)
    session.enqueue(delivery("b", 1), 10, now=0.0)
    assert session.dequeue().message.topic == "a"
    assert session.queued_qos0 == 0
    assert session.dequeue().message.topic == "b"
    assert session.queued_qos0 == 0


@given(
    qoses=st.lists(st.integers(0, 2), max_size=40),
    limit=st.integers(0, 8),
)
def test_drop_policy_model(qoses: list[int], limit: int) -> None:
    """Compared against a straightforward model of the documented policy."""
    session = Session("c")
    model: list[tuple[int, int]] = []  # (index, qos)
    for index, qos in enumerate(qoses):
        nothing_dropped = session.enqueue(delivery(str(index), qos), limit, now=0.0)
        room = len(model) < limit  # else this one or the oldest QoS 0 one is dropped
        queued = True
        if not room:
            oldest_qos0 = next((i for i, entry in enumerate(model) if entry[1] == 0), None)
            if oldest_qos0 is None:
                queued = False
            else:
                del model[oldest_qos0]
        if queued:
            model.append((index, qos))
        assert nothing_dropped is room
        assert len(session.queue) <= max(limit, 0)
    assert topics(session) == [str(index) for index, _ in model]
    assert session.queued_qos0 == sum(1 for _, qos in model if qos == 0)


# -- what the store holds ------------------------------------------------------------------

QUEUED = None
PUBACK = OutboundState.AWAITING_PUBACK
PUBREC = OutboundState.AWAITING_PUBREC
PUBCOMP = OutboundState.AWAITING_PUBCOMP


def persistent(expiry: int = 60) -> tuple[Session, ContentsStore]:
    store = ContentsStore()
    as_store: Store = store  # ContentsStore must satisfy the Store protocol (mypy)
    session = Session("c", expiry)
    session.attach_store(as_store)
    return session, store


def test_persistent_session_is_saved_when_attached() -> None:
    session, store = persistent(60)
    assert store.sessions == {"c": 60}
    assert session.store is store


def test_subscriptions_are_saved_and_deleted() -> None:
    session, store = persistent()
    options = SubscriptionOptions(qos=1, identifier=7)
    session.subscribe("a/+", options)
    assert store.subscriptions == {("c", "a/+"): options}
    session.unsubscribe("a/+")
    session.unsubscribe("never/subscribed")
    assert store.subscriptions == {}
    assert session.subscriptions == {}


def test_qos1_flow_is_recorded_with_increasing_seq() -> None:
    session, store = persistent()
    first, second, third = delivery("a", 1), delivery("b", 1), delivery("c", 0)
    session.enqueue(first, 10, now=0.0)
    session.enqueue(second, 10, now=0.0)
    session.enqueue(third, 10, now=0.0)  # QoS 0: not stored
    assert (first.seq, second.seq, third.seq) == (1, 2, 0)
    assert store.deliveries == {("c", 1): ("a", QUEUED, 0), ("c", 2): ("b", QUEUED, 0)}
    session.send(session.dequeue(), 11)
    session.send(session.dequeue(), 12)
    assert store.deliveries == {("c", 1): ("a", PUBACK, 11), ("c", 2): ("b", PUBACK, 12)}
    assert session.complete(11, PUBACK)
    assert store.deliveries == {("c", 2): ("b", PUBACK, 12)}
    assert list(session.inflight) == [12]


def test_send_of_an_unqueued_delivery_saves_it_first() -> None:
    """A delivery sent without being queued first is stored under the next seq, in its
    sent state (an update of a row never saved would be lost)."""
    session, store = persistent()
    session.enqueue(delivery("queued", 1), 10, now=0.0)
    direct = delivery("direct", 2)
    session.send(direct, 5)
    assert direct.seq == 2
    assert store.deliveries == {
        ("c", 1): ("queued", QUEUED, 0),
        ("c", 2): ("direct", PUBREC, 5),
    }
    assert session.inflight[5].state is PUBREC


def test_qos2_flow_records_pubrel_then_deletes_on_pubcomp() -> None:
    session, store = persistent()
    session.send(delivery("x", 2), 9)
    assert store.deliveries == {("c", 1): ("x", PUBREC, 9)}
    assert not session.complete(9, PUBCOMP)  # too early
    session.released(9)
    assert session.inflight[9].state is PUBCOMP
    assert store.deliveries == {("c", 1): ("x", PUBCOMP, 9)}
    assert not session.complete(9, PUBACK)  # wrong kind
    assert not session.complete(10, PUBCOMP)  # unknown id
    assert store.deliveries == {("c", 1): ("x", PUBCOMP, 9)}
    assert session.complete(9, PUBCOMP)
    assert store.deliveries == {}
    assert session.inflight == {}


def test_seq_keeps_increasing_across_many_deliveries() -> None:
    session, store = persistent()
    items = [delivery(str(index), 1 + index % 2) for index in range(20)]
    for index, item in enumerate(items):
        if index % 3:
            session.enqueue(item, 100, now=0.0)
        else:
            session.send(item, session.allocate_packet_id())
    assert [item.seq for item in items] == list(range(1, 21))
    assert sorted(store.deliveries) == [("c", seq) for seq in range(1, 21)]


def test_discard_deletes_only_stored_deliveries() -> None:
    session, store = persistent()
    session.enqueue(delivery("s", 1), 10, now=0.0)
    session.discard(session.dequeue())
    assert store.deliveries == {}
    writes = store.writes
    session.discard(delivery("never-stored", 0))
    assert store.writes == writes, "a delivery that was never stored costs no write"


def test_refused_delivery_is_not_stored() -> None:
    session, store = persistent()
    session.enqueue(delivery("a", 1), 1, now=0.0)
    assert not session.enqueue(delivery("b", 1), 1, now=0.0)
    assert store.deliveries == {("c", 1): ("a", QUEUED, 0)}


def test_inbound_qos2_is_saved_and_deleted() -> None:
    session, store = persistent()
    session.receive_qos2(42)
    assert session.inbound_qos2 == {42}
    assert store.inbound_qos2 == {("c", 42)}
    assert session.release_qos2(42)
    assert not session.release_qos2(42)
    assert not session.release_qos2(43)
    assert store.inbound_qos2 == set()
    assert session.inbound_qos2 == set()


def test_session_with_expiry_zero_records_nothing() -> None:
    store = ContentsStore()
    session = Session("c", 0)
    session.attach_store(store)
    session.subscribe("a", SubscriptionOptions(qos=1))
    session.unsubscribe("a")
    queued = delivery("q", 1)
    session.enqueue(queued, 10, now=0.0)
    session.send(session.dequeue(), session.allocate_packet_id())
    session.send(delivery("x", 2), session.allocate_packet_id())
    session.released(2)
    session.complete(1, PUBACK)
    session.complete(2, PUBCOMP)
    session.receive_qos2(5)
    session.release_qos2(5)
    session.save()
    session.set_expiry_interval(300, store)  # never becomes persistent after creation
    session.forget()
    assert store.writes == 0, "a clean session never touches the store"
    assert session.store is None
    assert queued.seq == 0


def test_set_expiry_interval_to_zero_deletes_the_record() -> None:
    session, store = persistent(60)
    session.subscribe("kept-until-now", SubscriptionOptions())
    session.set_expiry_interval(0, store)
    assert store.is_empty()
    assert session.store is None
    session.subscribe("a", SubscriptionOptions())
    session.enqueue(delivery(), 10, now=0.0)
    assert store.is_empty()


def test_set_expiry_interval_nonzero_updates_the_record() -> None:
    session, store = persistent(60)
    session.set_expiry_interval(120, store)
    assert store.sessions == {"c": 120}


def test_forget_deletes_the_record_once() -> None:
    session, store = persistent(60)
    session.subscribe("a", SubscriptionOptions())
    session.forget()
    assert store.is_empty()
    writes = store.writes
    session.forget()
    assert store.writes == writes


# -- containers made on first use -------------------------------------------------------------


def test_containers_are_made_on_first_use_and_shared_while_empty() -> None:
    session = Session("c")
    other = Session("d")
    assert session.subscriptions is other.subscriptions
    assert session.inflight is other.inflight
    assert session.inbound_qos2 is other.inbound_qos2
    session.subscribe("a/b", SubscriptionOptions(qos=1))
    session.send(delivery(), 7)
    session.receive_qos2(3)
    assert dict(session.subscriptions) == {"a/b": SubscriptionOptions(qos=1)}
    assert list(session.inflight) == [7]
    assert session.inbound_qos2 == {3}
    assert (other.subscriptions, other.inflight, other.inbound_qos2) == ({}, {}, frozenset())
    assert session.release_qos2(3)
    assert session.inbound_qos2 is other.inbound_qos2  # emptied: the shared one again
    session.unsubscribe("never/subscribed")
    other.unsubscribe("never/subscribed")
    assert other.complete(7, OutboundState.AWAITING_PUBACK) is False
