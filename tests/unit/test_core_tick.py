"""The periodic tick handles every due item, even when handling one of them fails."""

from __future__ import annotations

from roost.config import Settings
from roost.core import BrokerCore
from roost.message import Message
from roost.session import Delivery, SubscriptionOptions
from roost.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class ExpiringConnection:
    """A connection whose keep alive has run out; ``broken`` ones fail to close."""

    def __init__(self, broken: bool) -> None:
        self.broken = broken
        self.expired = False
        self.wheel_prev = self.wheel_next = None  # its place in the keep-alive wheel

    def deliver(self, delivery: Delivery) -> None: ...

    def take_over(self) -> None: ...

    def keepalive_deadline(self) -> float | None:
        return 101.0

    def keepalive_expired(self) -> None:
        if self.broken:
            raise RuntimeError("closing failed")
        self.expired = True

    def writes_stuck(self, seconds: float) -> None: ...

    def server_shutdown(self) -> None: ...


def test_a_failing_item_does_not_stop_the_others() -> None:
    clock = Clock()
    core = BrokerCore(Settings(store="memory"), clock, MemoryStore())
    connections = [ExpiringConnection(broken=n % 2 == 0) for n in range(6)]
    for connection in connections:
        core.watch_keepalive(connection, 101.0)
    clock.now = 102.0
    core.tick()
    assert [c.expired for c in connections if not c.broken] == [True, True, True]


class CheckMember(ExpiringConnection):
    """A member of a producer group; delivering its first check request fails."""

    def __init__(self) -> None:
        super().__init__(broken=False)
        self.checks: list[str] = []

    def keepalive_deadline(self) -> float | None:
        return None

    def deliver(self, delivery: Delivery) -> None:
        if not self.checks:
            self.checks.append("failed")
            raise RuntimeError("delivery failed")
        self.checks.append(delivery.message.payload.decode())


def test_a_failing_transaction_check_does_not_stop_the_next() -> None:
    clock = Clock()
    core = BrokerCore(Settings(store="memory", transaction_timeout=1), clock, MemoryStore())
    member = CheckMember()
    core.connections["member"] = member
    core.router.subscribe("member", "$tx/check/g", SubscriptionOptions(qos=1))
    for n in range(2):
        core.prepare_transaction(f"tx{n}", "g", None, Message("t", b"half %d" % n, 1, False), None)
    clock.now = 110.0
    core.tick()
    assert member.checks == ["failed", "half 1"]
