"""TransactionProducer (roost.client) against a real broker: local transaction outcomes,
check-backs, sync and async callbacks, refusals.

Check-back tests run the broker on a ManualClock and move its time on to each check."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from brokerthread import ManualClock
from roost.client import (
    CheckRequest,
    HalfMessage,
    LocalTransactionState,
    MQTTClient,
    SendResult,
    TransactionError,
    TransactionProducer,
)
from roost.codec import Properties, Publish

COMMIT = LocalTransactionState.COMMIT
ROLLBACK = LocalTransactionState.ROLLBACK
UNKNOWN = LocalTransactionState.UNKNOWN
TIMEOUT = 15.0
QUICK_CHECKS: dict[str, Any] = {
    "transaction_timeout": 1,
    "transaction_check_interval": 1,
    "transaction_check_max": 5,
}
T = TypeVar("T")


def run(scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async scenario on a fresh event loop, failing it after TIMEOUT."""

    async def bounded() -> T:
        async with asyncio.timeout(TIMEOUT):
            return await scenario()

    return asyncio.run(bounded())


def producer(
    broker: Any, check: Callable[[CheckRequest], Any], **options: Any
) -> TransactionProducer:
    return TransactionProducer(f"mqtt://{broker.host}:{broker.port}", "orders", check, **options)


async def advance(broker: Any, seconds: float) -> None:
    """Move the broker's clock on and run its sweep (in the broker's thread)."""
    await asyncio.to_thread(broker.advance, seconds)


def answer(state: LocalTransactionState) -> Callable[[Any], LocalTransactionState]:
    """A sync callback that always answers ``state``."""
    return lambda _: state


async def consumer(broker: Any) -> MQTTClient:
    client = await MQTTClient.connect(broker.host, broker.port, "consumer")
    await client.subscribe("orders/#", qos=1)
    return client


async def until_marker(client: MQTTClient, marker_from: MQTTClient) -> list[Publish]:
    """The messages ``client`` gets before a marker that ``marker_from`` publishes now."""
    await marker_from.publish("orders/paid", b"marker", qos=1)
    received = []
    async for message in client.messages():
        if message.payload == b"marker":
            return received
        received.append(message)
    raise AssertionError("connection closed before the marker")


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_commit_delivers(make_broker: Callable[..., Any], asynchronous: bool) -> None:
    broker = make_broker()
    executed: list[HalfMessage] = []

    def execute(message: HalfMessage) -> LocalTransactionState:
        executed.append(message)
        return COMMIT

    async def execute_async(message: HalfMessage) -> LocalTransactionState:
        await asyncio.sleep(0)
        return execute(message)

    async def scenario() -> None:
        orders = await consumer(broker)
        async with producer(broker, answer(UNKNOWN)) as sender:
            app = Properties(content_type="application/json", user_properties=(("k", "v"),))
            result = await sender.send(
                "orders/paid",
                b"{}",
                execute_async if asynchronous else execute,
                transaction_id="t1",
                properties=app,
            )
            assert result == SendResult("t1", COMMIT)
            [message] = await until_marker(orders, sender.client)
        await orders.disconnect()
        assert (message.topic, message.payload, message.qos) == ("orders/paid", b"{}", 1)
        assert message.properties.content_type == "application/json"
        tags = (("k", "v"), ("roost-tx-id", "t1"), ("roost-tx-group", "orders"))
        assert message.properties.user_properties == tags
        [half] = executed
        assert (half.transaction_id, half.topic, half.payload) == ("t1", "orders/paid", b"{}")
        assert half.user_property("roost-tx-group") == "orders"

    run(scenario)


def failing(message: HalfMessage) -> LocalTransactionState:
    raise RuntimeError("the local transaction failed")


async def async_rollback(message: HalfMessage) -> LocalTransactionState:
    return ROLLBACK


@pytest.mark.parametrize(
    "execute", [answer(ROLLBACK), async_rollback, failing], ids=["sync", "async", "raises"]
)
def test_rollback_never_delivers(
    make_broker: Callable[..., Any], execute: Callable[[HalfMessage], Any]
) -> None:
    broker = make_broker()

    async def scenario() -> None:
        orders = await consumer(broker)
        async with producer(broker, answer(UNKNOWN)) as sender:
            result = await sender.send("orders/paid", b"x", execute)
            assert result.state is ROLLBACK
            assert await until_marker(orders, sender.client) == []
            with pytest.raises(TransactionError) as refused:
                await sender.decide(result.transaction_id, COMMIT)
        await orders.disconnect()
        assert refused.value.reason_code == 0x83
        assert refused.value.reason_string == (
            f"transaction {result.transaction_id!r} is already rolled back"
        )
        assert refused.value.state is COMMIT

    run(scenario)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_unknown_then_the_check_commits(
    make_broker: Callable[..., Any], clock: ManualClock, asynchronous: bool
) -> None:
    broker = make_broker(clock=clock, **QUICK_CHECKS)
    requests: list[CheckRequest] = []

    def check(request: CheckRequest) -> LocalTransactionState:
        requests.append(request)
        if request.check_number == 1:
            raise RuntimeError("not sure yet")  # counts as UNKNOWN: the broker asks again
        return COMMIT

    async def check_async(request: CheckRequest) -> LocalTransactionState:
        return check(request)

    async def scenario() -> None:
        orders = await consumer(broker)
        async with producer(broker, check_async if asynchronous else check) as sender:
            result = await sender.send("orders/paid", b"x", answer(UNKNOWN), transaction_id="t1")
            assert result == SendResult("t1", UNKNOWN)
            await advance(broker, 1)  # check 1
            await advance(broker, 1)  # check 2
            message = await anext(orders.messages())
        await orders.disconnect()
        assert message.payload == b"x"
        assert [r.check_number for r in requests] == [1, 2]
        assert (requests[0].transaction_id, requests[0].topic) == ("t1", "orders/paid")
        assert requests[0].payload == b"x"
        assert requests[0].user_property("roost-tx-topic") == "orders/paid"

    run(scenario)


def test_another_member_answers_for_a_closed_producer(
    make_broker: Callable[..., Any], clock: ManualClock
) -> None:
    broker = make_broker(clock=clock, **QUICK_CHECKS)

    async def scenario() -> None:
        orders = await consumer(broker)
        async with producer(broker, answer(UNKNOWN), client_id="first") as first:
            result = await first.send("orders/paid", b"x", answer(UNKNOWN))
        await asyncio.to_thread(broker.wait_offline, "first")
        async with producer(broker, answer(COMMIT)):
            await advance(broker, 1)
            message = await anext(orders.messages())
        await orders.disconnect()
        assert dict(message.properties.user_properties)["roost-tx-id"] == result.transaction_id

    run(scenario)


def test_checks_during_execute_are_answered_unknown(make_broker: Callable[..., Any]) -> None:
    broker = make_broker(**QUICK_CHECKS)
    checked: list[CheckRequest] = []

    async def scenario() -> None:
        orders = await consumer(broker)
        async with producer(broker, checked.append) as sender:
            decisions: list[tuple[str, LocalTransactionState]] = []
            answered = asyncio.Event()
            decide = sender.decide

            async def recording(transaction_id: str, state: LocalTransactionState) -> None:
                decisions.append((transaction_id, state))
                answered.set()
                await decide(transaction_id, state)

            sender.decide = recording  # type: ignore[method-assign]

            async def execute(message: HalfMessage) -> LocalTransactionState:
                await answered.wait()  # the check came while the transaction was running
                return COMMIT

            await sender.send("orders/paid", b"x", execute, transaction_id="t1", check_delay=0)
            assert await anext(orders.messages())
        await orders.disconnect()
        assert decisions == [("t1", UNKNOWN), ("t1", COMMIT)]
        assert checked == []

    run(scenario)


def test_refused_half_message(make_broker: Callable[..., Any]) -> None:
    broker = make_broker(max_pending_transactions_per_group=1)
    executed: list[HalfMessage] = []

    async def scenario() -> None:
        async with producer(broker, answer(UNKNOWN)) as sender:
            await sender.send("orders/paid", b"x", answer(UNKNOWN), transaction_id="t1")
            with pytest.raises(TransactionError) as full:
                await sender.send("orders/paid", b"y", executed.append, transaction_id="t2")
            await sender.decide("t1", COMMIT)
            with pytest.raises(TransactionError) as settled:
                await sender.send("orders/paid", b"z", executed.append, transaction_id="t1")
        assert (full.value.transaction_id, full.value.reason_code) == ("t2", 0x97)
        assert full.value.state is None
        assert "max_pending_transactions_per_group" in (full.value.reason_string or "")
        assert settled.value.reason_code == 0x83
        assert settled.value.reason_string == "transaction 't1' is already committed"
        assert executed == []

    run(scenario)


def test_url_must_be_mqtt() -> None:
    with pytest.raises(ValueError, match="mqtt://"):
        TransactionProducer("http://localhost:1883", "orders", answer(UNKNOWN))
    with pytest.raises(ValueError, match="group"):
        TransactionProducer("mqtt://localhost", "orders/eu", answer(UNKNOWN))
