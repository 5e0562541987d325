"""The session queue under its drop policy: enqueueing into a full queue does work that
does not grow with the queue, expired messages leave first [MQTT-3.3.2-5], and what is
dropped is not kept alive by the queue's indexes."""

from __future__ import annotations

import weakref
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from roost.codec import Properties
from roost.message import Message
from roost.session import Delivery, Session
from roost.store.memory import MemoryStore

reads = [0]  # attribute reads on Watched deliveries


class Watched(Delivery):
    """A delivery that counts every attribute read on it (how many times the queue looks
    at a queued delivery is the work it does) and can be weakly referenced (to see
    whether the queue still holds it)."""

    __slots__ = ("__weakref__",)

    def __getattribute__(self, name: str) -> Any:
        reads[0] += 1
        return super().__getattribute__(name)


def message(name: str, expiry: int | None = None, now: float = 0.0) -> Message:
    return Message(name, b"x", 2, False, Properties(message_expiry_interval=expiry), now=now)


def delivery(name: str, qos: int, expiry: int | None = None, now: float = 0.0) -> Watched:
    return Watched(message(name, expiry, now), qos, False)


def topics(session: Session) -> list[str]:
    return [queued.message.topic for queued in session.queue]


def reads_during(action: Any) -> int:
    reads[0] = 0
    action()
    return reads[0]


# -- work per enqueue ---------------------------------------------------------------------


def full_of_qos1_then_qos0(size: int) -> Session:
    """A full queue whose only QoS 0 message is the newest (the old policy scanned past
    every QoS 1 message to find it), with expiring messages among them."""
    session = Session("c")
    for index in range(size - 1):
        expiry = 10_000 if index % 3 == 0 else None
        assert session.enqueue(delivery(f"q1/{index}", 1, expiry), size, 0.0)
    assert session.enqueue(delivery("q0/first", 0), size, 0.0)
    return session


def test_dropping_the_oldest_qos0_does_not_grow_with_the_queue() -> None:
    def churn(size: int) -> int:
        session = full_of_qos1_then_qos0(size)

        def enqueue_500() -> None:
            for index in range(500):  # each makes room by dropping the oldest QoS 0
                assert not session.enqueue(delivery(f"q0/{index}", 0), size, 1.0)

        work = reads_during(enqueue_500)
        assert len(session.queue) == size
        assert topics(session)[-1] == "q0/499"
        return work

    assert churn(10_000) <= 2 * churn(100)


def test_removing_expired_messages_does_not_grow_with_the_queue() -> None:
    def expire_one_per_enqueue(size: int) -> int:
        """Expiry times are a permutation of 1..size, so each second frees one place
        somewhere in the middle of the queue."""
        session = Session("c")
        for index in range(size):
            expiry = (index * 7919) % size + 1
            session.enqueue(delivery(f"m/{index}", 1, expiry), size, 0.0)

        def enqueue_50() -> None:
            for second in range(1, 51):
                new = delivery(f"new/{second}", 1)
                assert session.enqueue(new, size, float(second))

        work = reads_during(enqueue_50)
        assert len(session.queue) == size
        return work

    assert expire_one_per_enqueue(10_000) <= 2 * expire_one_per_enqueue(100)


# -- memory -------------------------------------------------------------------------------


def test_dropped_deliveries_are_not_kept_by_the_queue() -> None:
    """A slow client's queue churns through 10,000 QoS 0 messages behind a QoS 1 one that
    cannot be sent: at most twice the queue stays referenced."""
    session = Session("c")
    session.enqueue(delivery("stuck", 1), 100, 0.0)
    refs = []
    for index in range(10_000):
        new = delivery(f"q0/{index}", 0, expiry=5 if index % 2 else None)
        refs.append(weakref.ref(new))
        session.enqueue(new, 100, 0.0)
        del new
    assert len(session.queue) == 100
    assert sum(ref() is not None for ref in refs) <= 2 * 100


def test_sent_expiring_deliveries_are_not_kept_by_the_queue() -> None:
    session = Session("c")
    refs = []
    for index in range(10_000):
        new = delivery(f"m/{index}", 1, expiry=3600)
        refs.append(weakref.ref(new))
        session.enqueue(new, 10_000, 0.0)
        del new
        if index % 10:
            session.dequeue()
    assert len(session.queue) == 1000
    assert sum(ref() is not None for ref in refs) <= 2 * 1000


# -- behaviour ----------------------------------------------------------------------------


def test_expired_messages_leave_a_full_queue_before_any_qos0() -> None:
    session = Session("c")
    session.enqueue(delivery("q0", 0), 3, 0.0)
    session.enqueue(delivery("short", 1, expiry=5), 3, 0.0)
    session.enqueue(delivery("long", 1, expiry=50), 3, 0.0)
    assert session.enqueue(delivery("new", 1), 3, 5.0)
    assert topics(session) == ["q0", "long", "new"]
    # nothing expired: the QoS 0 message is dropped for it, and the caller told so
    assert not session.enqueue(delivery("newer", 1), 3, 5.0)
    assert topics(session) == ["long", "new", "newer"]
    assert session.queued_qos0 == 0


def test_expired_messages_of_a_persistent_session_are_deleted_from_the_store() -> None:
    class Deletions(MemoryStore):
        def __init__(self) -> None:
            self.deleted: list[str] = []

        def delete_delivery(self, client_id: str, delivery: Delivery) -> None:
            self.deleted.append(delivery.message.topic)

    store = Deletions()
    session = Session("c", expiry_interval=60)
    session.attach_store(store)
    for name, expiry in [("a", 5), ("b", None), ("c", 5)]:
        session.enqueue(delivery(name, 1, expiry), 3, 0.0)
    assert session.enqueue(delivery("d", 1), 3, 10.0)
    assert sorted(store.deleted) == ["a", "c"]
    assert topics(session) == ["b", "d"]


def test_the_head_is_readable_after_drops_in_front_of_it() -> None:
    session = Session("c")
    for name, qos in [("a", 0), ("b", 0), ("c", 1)]:
        session.enqueue(delivery(name, qos), 3, 0.0)
    session.enqueue(delivery("d", 1), 3, 0.0)
    session.enqueue(delivery("e", 1), 3, 0.0)
    queue = session.queue
    assert queue[0].message.topic == "c"
    assert len(queue) == 3
    assert [session.dequeue().message.topic for _ in range(3)] == ["c", "d", "e"]
    assert not session.queue


def test_unsent_deliveries_go_back_to_the_head_and_can_expire() -> None:
    session = Session("c")
    session.enqueue(delivery("first", 1, expiry=5), 10, 0.0)
    session.enqueue(delivery("second", 1), 10, 0.0)
    sent = session.dequeue()
    session.send(sent, 1)
    session.unsend([1])
    assert topics(session) == ["first", "second"]
    assert session.enqueue(delivery("third", 1), 2, 5.0)  # full: the expired one leaves
    assert topics(session) == ["second", "third"]


# -- compared with a model of the documented policy ---------------------------------------

operation = st.one_of(
    st.tuples(st.just("enqueue"), st.integers(0, 2), st.sampled_from([None, 1, 3, 8])),
    st.tuples(st.just("advance"), st.just(0), st.integers(1, 4)),
    st.tuples(st.just("send"), st.just(0), st.just(None)),
    st.tuples(st.just("unsend"), st.just(0), st.just(None)),
)


@given(operations=st.lists(operation, max_size=60), limit=st.integers(1, 6))
def test_queue_follows_a_model_of_the_drop_policy(
    operations: list[tuple[str, int, int | None]], limit: int
) -> None:
    """Enqueue (with and without expiry), send, put sent messages back, let time pass:
    the queue holds what a list following the documented policy holds."""
    session = Session("c")
    model: list[tuple[str, int, float | None]] = []  # (name, qos, expires at)
    inflight: list[tuple[int, tuple[str, int, float | None]]] = []
    now = 0.0
    for index, (kind, qos, amount) in enumerate(operations):
        if kind == "enqueue":
            name = f"m{index}"
            entry = (name, qos, None if amount is None else now + amount)
            queued = nothing_dropped = True
            if len(model) >= limit:
                model = [e for e in model if e[2] is None or now < e[2]]
            if len(model) >= limit:
                nothing_dropped = False
                oldest_qos0 = next((i for i, e in enumerate(model) if e[1] == 0), None)
                if oldest_qos0 is None:
                    queued = False
                else:
                    del model[oldest_qos0]
            if queued:
                model.append(entry)
            result = session.enqueue(delivery(name, qos, amount, now), limit, now)
            assert result is nothing_dropped
        elif kind == "advance":
            now += amount or 0
        elif kind == "send" and model:
            sent = session.dequeue()
            entry = model.pop(0)
            assert sent.message.topic == entry[0]
            if sent.qos:
                packet_id = session.allocate_packet_id()
                session.send(sent, packet_id)
                inflight.append((packet_id, entry))
        elif kind == "unsend" and inflight:
            session.unsend([packet_id for packet_id, _ in inflight])
            model[:0] = [entry for _, entry in inflight]
            inflight.clear()
        assert topics(session) == [name for name, _, _ in model]
        assert len(session.queue) == len(model)
        assert session.queued_qos0 == sum(1 for _, qos, _ in model if qos == 0)
        if model:
            assert session.queue[0].message.topic == model[0][0]


def test_queue_positions_count_live_deliveries_only() -> None:
    session = Session("c")
    for name, qos in [("a", 1), ("b", 0), ("c", 1), ("d", 0)]:
        session.enqueue(delivery(name, qos), 4, 0.0)
    session.enqueue(delivery("e", 1), 4, 0.0)  # drops "b" from the middle
    queue = session.queue
    assert [queue[index].message.topic for index in range(4)] == ["a", "c", "d", "e"]
    with pytest.raises(IndexError):
        queue[4]
