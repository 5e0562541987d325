"""Scenarios every durable store must keep alike: a session with every kind of state a
store records, and what a session holds, as values to compare once it is read back."""

from __future__ import annotations

from typing import Any

from roost.codec import Properties, Will
from roost.message import Message
from roost.session import Delivery, Session, SubscriptionOptions
from roost.store.base import Store


def persistent(client_id: str, store: Store) -> Session:
    session = Session(client_id, 3600)
    session.attach_store(store)
    return session


def save_rich_session(store: Store) -> Session:
    """A persistent, offline session with every kind of state a store keeps, its times
    on a broker clock that reads 0 now."""
    session = persistent("rich", store)
    session.subscribe("a/#", SubscriptionOptions(qos=2, no_local=True, identifier=7))
    session.subscribe("b", SubscriptionOptions(1, retain_as_published=True, retain_handling=2))
    session.subscribe("c/+", SubscriptionOptions(0, identifier=268_435_455))
    qos2 = Delivery(Message("a/1", b"one", 2, False), 2, False, (7,))
    session.send(qos2, session.allocate_packet_id())
    session.released(1)  # awaiting PUBCOMP
    qos1 = Delivery(Message("a/2", b"two", 1, False), 1, False, (7,))
    session.send(qos1, session.allocate_packet_id())  # awaiting PUBACK
    unreleased = Delivery(Message("a/3", b"three", 2, False, origin="pub"), 2, False, (7,))
    session.send(unreleased, session.allocate_packet_id())  # awaiting PUBREC
    expiring = Message("b", b"queued", 1, True, Properties(message_expiry_interval=600))
    session.enqueue(Delivery(expiring, 1, True), 10, now=0.0)
    detailed = Message(
        "c/d",
        b"\x00\xffbinary",
        2,
        False,
        Properties(content_type="text/plain", user_properties=(("k", "v"), ("k", "w"))),
        origin="publisher",
    )
    session.enqueue(Delivery(detailed, 1, False, (7, 268_435_455)), 10, now=0.0)
    session.receive_qos2(9)
    session.receive_qos2(65535)
    will_properties = Properties(will_delay_interval=30, user_properties=(("why", "gone"),))
    session.will = Will("w", b"gone", 1, True, will_properties)
    session.will_due = 30.0
    session.expires_at = 3600.0
    session.set_owner("alice")  # whose it is, for authorization
    session.save()
    return session


def described(session: Session, since: float = 0.0) -> dict[str, Any]:
    """What a session holds, as comparable values. Times are counted from broker time
    ``since`` (where the clock was when the session was read back) and rounded to the
    second: the wall clock moves between saving and loading."""

    def moment(at: float | None) -> int | None:
        return None if at is None else round(at - since)

    def item(entry: Delivery) -> tuple[Any, ...]:
        m = entry.message
        expiry = moment(m.expires_at)
        message = (m.topic, m.payload, m.qos, m.retain, m.properties, m.origin, expiry)
        return (entry.seq, entry.qos, entry.retain, entry.subscription_ids, message)

    return {
        "id": session.client_id,
        "expiry": (session.expiry_interval, moment(session.expires_at)),
        "will": (session.will, moment(session.will_due)),
        "subscriptions": session.subscriptions,
        "inflight": [(pid, f.state, item(f.delivery)) for pid, f in session.inflight.items()],
        "queue": [item(entry) for entry in session.queue],
        "inbound_qos2": set(session.inbound_qos2),
        "next": (session.next_seq, session.next_packet_id),
        "owner": (session.identified, session.username),
    }
