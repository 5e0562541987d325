"""The in-memory store: nothing outlives the process (tests, or users who want no disk)."""

from __future__ import annotations

from collections.abc import Callable

from roost.message import Message
from roost.session import Delivery, OutboundState, Session, SubscriptionOptions
from roost.store.base import LoadedState
from roost.transactions import HalfMessage, Settled


class MemoryStore:
    """Records nothing; every change is "durable" at once."""

    def load(self, now: float) -> LoadedState:
        return LoadedState()

    def load_session(self, client_id: str) -> Session | None:
        return None

    def save_session(self, session: Session) -> None:
        pass

    def delete_session(self, session: Session) -> None:
        pass

    def save_subscription(
        self, client_id: str, topic_filter: str, options: SubscriptionOptions
    ) -> None:
        pass

    def delete_subscription(self, client_id: str, topic_filter: str) -> None:
        pass

    def save_delivery(self, client_id: str, delivery: Delivery) -> None:
        pass

    def update_delivery(
        self, client_id: str, delivery: Delivery, state: OutboundState, packet_id: int
    ) -> None:
        pass

    def delete_delivery(self, client_id: str, delivery: Delivery) -> None:
        pass

    def save_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        pass

    def delete_inbound_qos2(self, client_id: str, packet_id: int) -> None:
        pass

    def save_retained(self, message: Message) -> None:
        pass

    def delete_retained(self, topic: str) -> None:
        pass

    def save_transaction(self, half: HalfMessage) -> None:
        pass

    def settle_transaction(self, transaction_id: str, outcome: Settled) -> None:
        pass

    def after_commit(self, callback: Callable[[], None]) -> None:
        callback()

    @property
    def backlogged(self) -> bool:
        return False

    def when_drained(self, callback: Callable[[], None]) -> None:
        callback()

    def close(self) -> None:
        pass
