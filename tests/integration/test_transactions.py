"""Transactional (half) messages over the wire, spoken by hand with paho-mqtt MQTT 5 clients
(and a raw socket where a crash or a PUBREC code is needed): see docs/transactions.md.

Check-back tests run the broker on a ManualClock: broker time is moved on interval by
interval, and a fence (a marker each group member receives after everything sent to it
before) shows which checks have been sent by then."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from brokerproc import BrokerProcess
from brokerthread import MOMENT, ManualClock
from paho_helpers import wait_until

CHECK_TOPIC = "$tx/check/orders"
FENCE_TOPIC = "fence/checks"
SUCCESS, NOT_AUTHORIZED, REFUSED, QUOTA_EXCEEDED = 0x00, 0x87, 0x83, 0x97
# Check-back timings: first check 1 s after the half message, then every 2 s, three at most.
CHECKS: dict[str, Any] = {
    "transaction_timeout": 1,
    "transaction_check_interval": 2,
    "transaction_check_max": 3,
}

UserProperties = Sequence[tuple[str, str]]
# The fixtures of conftest.py, by duck typing: ``clients`` makes ``Conn`` objects (a paho client
# and what it received), ``raw`` opens raw sockets; a broker is anything with .host and .port.
Broker = Clients = Conn = RawFactory = Any


def with_user_properties(properties: UserProperties) -> Properties:
    """PUBLISH properties carrying ``properties`` as user properties."""
    props = Properties(PacketTypes.PUBLISH)
    if properties:
        props.UserProperty = list(properties)
    return props


def user(message: mqtt.MQTTMessage) -> dict[str, str]:
    """The user properties of a received message."""
    return dict(getattr(message.properties, "UserProperty", []))


class Producer:
    """A paho client speaking the transaction protocol by hand; :meth:`publish` returns the
    PUBACK / PUBCOMP reason code and reason string."""

    def __init__(self, conn: Conn, group: str = "orders") -> None:
        self.conn = conn
        self.group = group
        self.acks: dict[int, tuple[int, str]] = {}
        self.lock = threading.Lock()
        conn.client.on_publish = self._on_publish

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, rc: Any, props: Any
    ) -> None:
        with self.lock:
            self.acks[mid] = (rc.value, getattr(props, "ReasonString", ""))

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        properties: UserProperties = (),
    ) -> tuple[int, str]:
        props = with_user_properties(properties)
        info = self.conn.client.publish(topic, payload, qos, retain, properties=props)
        wait_until(lambda: info.mid in self.acks, what=f"acknowledgement of {topic}")
        with self.lock:
            return self.acks.pop(info.mid)

    def half(
        self,
        tx_id: str,
        payload: bytes = b"",
        topic: str = "orders/paid",
        qos: int = 1,
        retain: bool = False,
        extra: UserProperties = (),
    ) -> tuple[int, str]:
        """Send a half message; its payload defaults to the transaction id."""
        tags = [("roost-tx-id", tx_id), ("roost-tx-group", self.group), *extra]
        return self.publish(topic, payload or tx_id.encode(), qos, retain, tags)

    def decide(self, decision: str, tx_id: str) -> tuple[int, str]:
        return self.publish(f"$tx/{decision}", tx_id.encode())

    def marker(self, payload: bytes = b"marker", topic: str = "orders/paid") -> bytes:
        """A normal QoS 1 message: whatever a subscriber gets before it came before it."""
        assert self.publish(topic, payload)[0] in (SUCCESS, 0x10)
        return payload


def checks_for(member: Conn, tx_id: str) -> list[mqtt.MQTTMessage]:
    """The check requests ``member`` received for transaction ``tx_id``."""
    with member.col.lock:
        received = list(member.col.messages)
    return [m for m in received if m.topic == CHECK_TOPIC and user(m)["roost-tx-id"] == tx_id]


def wait_for_checks(member: Conn, tx_id: str, count: int, timeout: float = 10) -> None:
    wait_until(lambda: len(checks_for(member, tx_id)) >= count, timeout, f"{count} checks")


_fences = itertools.count()


def fence(producer: Producer, *members: Producer) -> None:
    """Publish a marker on FENCE_TOPIC and wait until every member (subscribed to it) has
    it: by then each member has received every check the broker sent it before."""
    marker = f"fence {next(_fences)}".encode()
    assert producer.publish(FENCE_TOPIC, marker)[0] in (SUCCESS, 0x10)
    for member in members:
        member.conn.wait_for_payload(marker)


def check_numbers(member: Producer, tx_id: str) -> list[str]:
    return [user(m)["roost-tx-check"] for m in checks_for(member.conn, tx_id)]


def checks_around(
    broker: Broker, seconds: float, producer: Producer, member: Producer, tx_id: str
) -> tuple[list[str], list[str]]:
    """Move broker time on to just before ``seconds`` from now, then to it; returns the
    numbers of the checks of ``tx_id`` that ``member`` had received at each point."""
    seen = []
    for step in (seconds - MOMENT, MOMENT):
        broker.advance(step)
        fence(producer, member)
        seen.append(check_numbers(member, tx_id))
    return seen[0], seen[1]


def subscriber(clients: Clients, broker: Broker, client_id: str, *filters: str) -> Conn:
    conn = clients.connect(broker, client_id)
    for topic_filter in filters:
        assert conn.sub(topic_filter, 1) == [1]
    return conn


@pytest.fixture
def connect(clients: Clients) -> Callable[..., Producer]:
    def factory(broker: Broker, client_id: str, *filters: str) -> Producer:
        return Producer(subscriber(clients, broker, client_id, *filters))

    return factory


# --------------------------------------------------------------------------------------------
# commit, rollback, invisibility


def test_commit_delivers_like_a_normal_publish(
    make_broker: Callable[..., Any], clients: Clients, connect: Callable[..., Producer]
) -> None:
    broker = make_broker()
    orders = subscriber(clients, broker, "orders", "orders/#")
    everything = subscriber(clients, broker, "everything", "#", "$tx/#")
    producer = connect(broker, "producer")

    app = [("order", "1001")]
    assert producer.half("t1", b"paid 1001", extra=app) == (SUCCESS, "")
    assert producer.decide("commit", "t1") == (SUCCESS, "")
    marker = producer.marker()

    for conn in (orders, everything):
        conn.wait_for_payload(marker)
        received = conn.before(marker)
        assert [(m.topic, m.payload, m.qos) for m in received] == [("orders/paid", b"paid 1001", 1)]
        assert user(received[0]) == {
            "roost-tx-id": "t1",
            "roost-tx-group": "orders",
            "order": "1001",
        }


def test_qos0_half_message_and_decision_work_unconfirmed(
    make_broker: Callable[..., Any], clients: Clients, connect: Callable[..., Producer]
) -> None:
    broker = make_broker()
    orders = subscriber(clients, broker, "orders", "orders/#")
    producer = connect(broker, "producer")
    tags = with_user_properties([("roost-tx-id", "t1"), ("roost-tx-group", "orders")])
    producer.conn.client.publish("orders/paid", b"t1", 0, properties=tags)
    producer.conn.client.publish("$tx/commit", b"t1", 0)
    marker = producer.marker()  # same connection: handled after both
    orders.wait_for_payload(marker)
    assert [(m.payload, m.qos) for m in orders.before(marker)] == [(b"t1", 0)]


def test_commits_are_delivered_in_the_order_they_arrive(
    make_broker: Callable[..., Any], clients: Clients, connect: Callable[..., Producer]
) -> None:
    broker = make_broker()
    orders = subscriber(clients, broker, "orders", "orders/#")
    producer = connect(broker, "producer")
    for tx_id in ("a", "b", "c"):
        assert producer.half(tx_id)[0] == SUCCESS
    for tx_id in ("c", "a", "b"):
        assert producer.decide("commit", tx_id)[0] == SUCCESS
    marker = producer.marker()
    orders.wait_for_payload(marker)
    assert [m.payload for m in orders.before(marker)] == [b"c", b"a", b"b"]


def test_rollback_never_delivers(
    make_broker: Callable[..., Any], clients: Clients, connect: Callable[..., Producer]
) -> None:
    broker = make_broker()
    orders = subscriber(clients, broker, "orders", "orders/#", "#")
    producer = connect(broker, "producer")
    assert producer.half("t1")[0] == SUCCESS
    assert producer.decide("rollback", "t1") == (SUCCESS, "")
    code, reason = producer.decide("commit", "t1")
    assert (code, reason) == (REFUSED, "transaction 't1' is already rolled back")
    marker = producer.marker()
    orders.wait_for_payload(marker)
    assert orders.before(marker) == []


def test_pending_half_message_is_invisible_and_not_retained(
    make_broker: Callable[..., Any], clients: Clients, connect: Callable[..., Producer]
) -> None:
    broker = make_broker()
    watchers = [
        subscriber(clients, broker, "hash", "#"),
        subscriber(clients, broker, "shared", "$share/g/#"),
        subscriber(clients, broker, "exact", "orders/paid"),
    ]
    producer = connect(broker, "producer")
    assert producer.half("t1", b"retained half", qos=2, retain=True)[0] == SUCCESS
    marker = producer.marker()
    for conn in watchers:
        conn.wait_for_payload(marker)
        assert conn.before(marker) == []

    def retained_now(client_id: str) -> list[tuple[bytes, bool]]:
        """What a new subscriber to orders/# gets: the retained messages, then a live marker."""
        late = subscriber(clients, broker, client_id, "orders/#")
        live = producer.marker(f"live {client_id}".encode())
        late.wait_for_payload(live)
        return sorted((m.payload, m.retain) for m in late.before(live))

    retained = producer.publish("orders/other", b"retained", retain=True)
    assert retained[0] in (SUCCESS, 0x10)
    assert retained_now("late-1") == [(b"retained", True)]
    # Committed, the half message becomes the retained message of its topic, like a publish.
    assert producer.decide("commit", "t1")[0] == SUCCESS
    assert retained_now("late-2") == [(b"retained", True), (b"retained half", True)]


# --------------------------------------------------------------------------------------------
# refused decisions and half messages


def test_refused_decisions(
    make_broker: Callable[..., Any], connect: Callable[..., Producer]
) -> None:
    broker = make_broker()
    producer = connect(broker, "producer")
    assert producer.decide("commit", "nope") == (REFUSED, "transaction 'nope' is unknown")
    assert producer.half("t1")[0] == SUCCESS
    assert producer.decide("unknown", "t1") == (SUCCESS, "")  # stays pending
    assert producer.decide("commit", "t1") == (SUCCESS, "")
    for decision in ("commit", "rollback", "unknown"):
        assert producer.decide(decision, "t1") == (REFUSED, "transaction 't1' is already committed")
    for reserved in (CHECK_TOPIC, "$tx/other"):
        assert producer.publish(reserved, b"t1")[0] == NOT_AUTHORIZED


def test_refused_half_messages(
    make_broker: Callable[..., Any], clients: Clients, connect: Callable[..., Producer]
) -> None:
    broker = make_broker()
    orders = subscriber(clients, broker, "orders", "orders/#")
    producer = connect(broker, "producer")
    assert producer.half("t1")[0] == SUCCESS
    assert producer.half("t1") == (SUCCESS, "")  # a resend while pending: kept once
    assert producer.decide("commit", "t1")[0] == SUCCESS
    code, reason = producer.half("t1")
    assert (code, reason) == (REFUSED, "transaction 't1' is already committed")

    invalid = {
        "no group": [("roost-tx-id", "t2")],
        "group with a slash": [("roost-tx-id", "t2"), ("roost-tx-group", "a/b")],
        "id too long": [("roost-tx-id", "x" * 257), ("roost-tx-group", "orders")],
        "bad delay": [
            ("roost-tx-id", "t2"),
            ("roost-tx-group", "g"),
            ("roost-tx-check-delay", "x"),
        ],
    }
    for case, tags in invalid.items():
        code, reason = producer.publish("orders/paid", b"invalid", properties=tags)
        assert code == REFUSED and reason, case
    marker = producer.marker()
    orders.wait_for_payload(marker)
    assert [m.payload for m in orders.before(marker)] == [b"t1"]


def test_pending_limits(
    make_broker: Callable[..., Any], raw: RawFactory, connect: Callable[..., Producer]
) -> None:
    broker = make_broker(max_pending_transactions=3, max_pending_transactions_per_group=2)
    orders, other = connect(broker, "orders-1"), connect(broker, "other-1")
    other.group = "other"
    assert [orders.half(tx_id)[0] for tx_id in ("a", "b")] == [SUCCESS, SUCCESS]
    code, reason = orders.half("c")
    assert code == QUOTA_EXCEEDED and "max_pending_transactions_per_group" in reason
    assert orders.decide("rollback", "a")[0] == SUCCESS  # frees a place in the group
    assert orders.half("c")[0] == SUCCESS
    assert other.half("d")[0] == SUCCESS  # 3 pending in all
    code, reason = other.half("e")
    assert code == QUOTA_EXCEEDED and "(max_pending_transactions)" in reason

    # The same answer in a PUBREC for a QoS 2 half message.
    client, _ = raw.connected(broker, "raw-producer", version=5)
    tags = [("UserProperty", ("roost-tx-id", "f")), ("UserProperty", ("roost-tx-group", "other"))]
    client.publish("orders/paid", b"f", qos=2, packet_id=1, props=tags)
    pubrec = client.expect("PUBREC")
    assert pubrec.reason_code == QUOTA_EXCEEDED
    assert "(max_pending_transactions)" in pubrec.props["ReasonString"]


# --------------------------------------------------------------------------------------------
# check-back


def test_another_member_answers_the_check_after_a_crash(
    make_broker: Callable[..., Any],
    clock: ManualClock,
    clients: Clients,
    raw: RawFactory,
    connect: Callable[..., Producer],
) -> None:
    broker = make_broker(clock=clock, **CHECKS)
    orders = subscriber(clients, broker, "orders", "orders/#")
    crashing, _ = raw.connected(broker, "producer-a", version=5)
    assert crashing.subscribe(1, [(CHECK_TOPIC, 1)]).reason_codes == [1]
    tags = [("roost-tx-id", "t1"), ("roost-tx-group", "orders"), ("order", "1001")]
    props = [("UserProperty", tag) for tag in tags]
    crashing.publish("orders/paid", b"paid 1001", qos=1, packet_id=1, props=props)
    assert crashing.expect("PUBACK").reason_code == SUCCESS
    crashing.drop()  # no DISCONNECT, no decision
    broker.wait_offline("producer-a")

    member = connect(broker, "producer-b", CHECK_TOPIC)
    broker.advance(1)
    wait_for_checks(member.conn, "t1", 1)
    check = checks_for(member.conn, "t1")[0]
    assert (check.payload, check.qos) == (b"paid 1001", 1)
    assert user(check) == {
        **dict(tags),
        "roost-tx-topic": "orders/paid",
        "roost-tx-check": "1",
    }
    assert member.decide("commit", "t1") == (SUCCESS, "")
    message = orders.wait_for_payload(b"paid 1001")
    assert user(message) == dict(tags)


def test_checks_go_to_connected_members_in_turn(
    make_broker: Callable[..., Any], clock: ManualClock, connect: Callable[..., Producer]
) -> None:
    broker = make_broker(clock=clock, **CHECKS)
    members = [connect(broker, f"member-{n}", CHECK_TOPIC, FENCE_TOPIC) for n in (1, 2)]
    producer = connect(broker, "producer")
    assert producer.half("t1")[0] == SUCCESS
    broker.advance(1)
    broker.advance(2)
    fence(producer, *members)
    # Check 1 went to one member, check 2 to the other.
    assert sorted(check_numbers(m, "t1") for m in members) == [["1"], ["2"]]
    assert producer.decide("rollback", "t1")[0] == SUCCESS


@pytest.mark.parametrize("final_action", ["rollback", "commit", "keep"])
def test_unanswered_checks_then_the_final_action(
    make_broker: Callable[..., Any],
    clock: ManualClock,
    clients: Clients,
    connect: Callable[..., Producer],
    final_action: str,
) -> None:
    broker = make_broker(clock=clock, **CHECKS, transaction_final_action=final_action)
    orders = subscriber(clients, broker, "orders", "orders/#")
    # Acknowledges checks, never decides.
    silent = connect(broker, "silent-member", CHECK_TOPIC, FENCE_TOPIC)
    producer = connect(broker, "producer")
    assert producer.half("t1")[0] == SUCCESS
    assert checks_around(broker, 1, producer, silent, "t1") == ([], ["1"])
    assert checks_around(broker, 2, producer, silent, "t1") == (["1"], ["1", "2"])
    assert checks_around(broker, 2, producer, silent, "t1") == (["1", "2"], ["1", "2", "3"])
    # One interval after check 3 comes the final action instead of a 4th check.
    broker.advance(2 - MOMENT)
    assert producer.decide("unknown", "t1") == (SUCCESS, "")  # still pending
    broker.advance(MOMENT)
    fence(producer, silent)
    assert check_numbers(silent, "t1") == ["1", "2", "3"]

    probe = producer.decide("unknown", "t1")  # changes nothing, tells whether t1 is pending
    if final_action == "keep":
        assert probe == (SUCCESS, "")
        assert producer.decide("commit", "t1")[0] == SUCCESS  # still open to a decision
    else:
        done = "committed" if final_action == "commit" else "rolled back"
        assert probe == (REFUSED, f"transaction 't1' is already {done}")
    marker = producer.marker()
    orders.wait_for_payload(marker)
    delivered = [m.payload for m in orders.before(marker)]
    assert delivered == ([] if final_action == "rollback" else [b"t1"])


def test_check_delay_overrides_transaction_timeout(
    make_broker: Callable[..., Any], clock: ManualClock, connect: Callable[..., Producer]
) -> None:
    broker = make_broker(clock=clock, **CHECKS)
    member = connect(broker, "member", CHECK_TOPIC, FENCE_TOPIC)
    producer = connect(broker, "producer")
    assert producer.half("late", extra=[("roost-tx-check-delay", "3")])[0] == SUCCESS
    assert producer.half("early")[0] == SUCCESS
    assert checks_around(broker, 1, producer, member, "early") == ([], ["1"])
    assert checks_around(broker, 2, producer, member, "late") == ([], ["1"])
    for tx_id in ("early", "late"):
        assert member.decide("rollback", tx_id)[0] == SUCCESS


# --------------------------------------------------------------------------------------------
# a broker SIGKILL with transactions in flight


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    flags = ["--transaction-timeout", "1", "--transaction-check-interval", "1"]
    process = BrokerProcess(tmp_path / "data", *flags, "--transaction-check-max", "30").start()
    yield process
    process.kill()


def test_transactions_survive_a_broker_sigkill(
    broker_process: BrokerProcess, clients: Clients, connect: Callable[..., Producer]
) -> None:
    durable = dict(clean=False, session_expiry=3600)
    receiver = clients.connect(broker_process, "durable", **durable)
    assert receiver.sub("orders/#", 1) == [1]
    producer = connect(broker_process, "producer")
    committed, rolled_back, pending = [], [], []
    for n in range(5):
        committed.append(f"c{n}")
        rolled_back.append(f"r{n}")
        pending.append(f"p{n}")
        for tx_id in (committed[-1], rolled_back[-1], pending[-1]):
            assert producer.half(tx_id)[0] == SUCCESS
        assert producer.decide("commit", committed[-1])[0] == SUCCESS
        assert producer.decide("rollback", rolled_back[-1])[0] == SUCCESS

    broker_process.restart()
    receiver.stop()
    member = connect(broker_process, "member", CHECK_TOPIC)
    for tx_id in pending:  # still pending, still checked, can be committed
        wait_for_checks(member.conn, tx_id, 1)
        assert member.decide("commit", tx_id) == (SUCCESS, "")
    for decision, settled, outcome in (
        ("rollback", committed, "committed"),
        ("commit", rolled_back, "rolled back"),
    ):
        for tx_id in settled:
            refusal = (REFUSED, f"transaction '{tx_id}' is already {outcome}")
            assert member.decide(decision, tx_id) == refusal
    marker = member.marker()

    # Each committed message reached the persistent subscriber, before or after the crash;
    # a second copy is a redelivery and must say so (DUP). Rolled-back ones never came.
    again = clients.connect(broker_process, "durable", **durable)
    again.wait_for_payload(marker)
    seen: set[str] = set()
    for message in receiver.messages + again.before(marker):
        payload = message.payload.decode()
        assert payload not in seen or message.dup, f"{payload} delivered twice without DUP"
        seen.add(payload)
    assert seen == set(committed + pending)
