"""The Store interface: a durable record of what the broker holds in memory.

The live state (sessions, queues, retained messages) is kept in memory by the core; a
store records every change that must survive a restart and gives it back at start-up.
Calls are synchronous and cheap (an implementation queues them); durability is asked for
with :meth:`Store.after_commit`, which runs a callback once everything recorded so far is
on disk — the broker sends PUBACK/PUBREC/PUBCOMP/PUBREL through it. What is queued is
bounded: while :attr:`Store.backlogged`, the broker stops reading from publishers until
:meth:`Store.when_drained` calls back.

Only sessions that outlive their connection (expiry interval > 0) are recorded. The Redis
store of a cluster (:mod:`roost.store.redis`) fits the same shape, the same events in a
different log; as Redis is read asynchronously, it adds ``open``, ``fetch_session`` and
``aclose`` of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from roost.message import Message
from roost.session import Delivery, OutboundState, Session, SubscriptionOptions
from roost.transactions import HalfMessage, Settled


@dataclass
class LoadedState:
    """Everything a store gives back at start-up."""

    sessions: list[Session] = field(default_factory=list)
    retained: list[Message] = field(default_factory=list)
    transactions: list[HalfMessage] = field(default_factory=list)
    settled: list[tuple[str, Settled]] = field(default_factory=list)  # oldest first


class Store(Protocol):
    def load(self, now: float) -> LoadedState:
        """Read the saved state; ``now`` is the broker clock, to rebase expiry times."""
        ...

    def load_session(self, client_id: str) -> Session | None:
        """Read one saved session, as :meth:`load` would have built it, or None: for a
        store that attaches sessions on demand instead of all at start-up."""
        ...

    def save_session(self, session: Session) -> None:
        """Create or update a session's own record (expiry, pending will)."""
        ...

    def delete_session(self, session: Session) -> None:
        """Forget a session and everything that belongs to it (its queued and inflight
        deliveries say which stored messages it held)."""
        ...

    def save_subscription(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None: ...

    def delete_subscription(self, client_id: str, topic_filter: str) -> None: ...

    def save_delivery(self, client_id: str, delivery: Delivery) -> None:
        """Record a delivery queued or sent for a session (``delivery.seq`` is its key)."""
        ...

    def update_delivery(
        self, client_id: str, delivery: Delivery, state: OutboundState, packet_id: int
    ) -> None:
        """A delivery went out (or moved on to PUBREL) under ``packet_id``."""
        ...

    def delete_delivery(self, client_id: str, delivery: Delivery) -> None:
        """A delivery is complete (acknowledged, expired or dropped)."""
        ...

    def save_inbound_qos2(self, client_id: str, packet_id: int) -> None: ...

    def delete_inbound_qos2(self, client_id: str, packet_id: int) -> None: ...

    def save_retained(self, message: Message) -> None: ...

    def delete_retained(self, topic: str) -> None: ...

    def save_transaction(self, half: HalfMessage) -> None:
        """Create or update a pending half message (its check count and next check)."""
        ...

    def settle_transaction(self, transaction_id: str, outcome: Settled) -> None:
        """Record a decision (an "Op" record) and drop the half message, atomically with
        whatever else this batch holds (the deliveries of a commit)."""
        ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once every change recorded so far is durable (never, if the
        store fails first: the broker then stops)."""
        ...

    @property
    def backlogged(self) -> bool:
        """True while more work waits to be written than the store should hold."""
        ...

    def when_drained(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the waiting work is back under a low-water mark (at once
        if it already is)."""
        ...

    def close(self) -> None:
        """Write what is pending and release the store."""
        ...
