"""Crash tests: a real broker process killed with SIGKILL loses no acknowledged message."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerproc import BrokerProcess
from paho_helpers import V5, V311, connect, disconnect, subscribe, wait_until
from rawmqtt import Pkt, RawClient


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    # Room for every message of a burst: neither the queue limit's drop policy nor the
    # Receive Maximum (paho sends the whole burst unacknowledged) is under test.
    limits = ["--max-queued-messages", "100000", "--receive-maximum", "65535"]
    process = BrokerProcess(tmp_path / "data", *limits).start()
    yield process
    process.kill()


def persistent_subscriber(broker: BrokerProcess, version: int, topic: str, qos: int) -> None:
    """Create a persistent session subscribed to ``topic``, then go offline."""
    client, collector = connect(broker, "durable-sub", version, clean=False, session_expiry=3600)
    subscribe(client, collector, topic, qos)
    disconnect(client)


def publish_all(
    broker: BrokerProcess, version: int, count: int, qos: int | tuple[int, ...]
) -> None:
    """Publish ``count`` messages and wait for every PUBACK / PUBCOMP; a tuple of QoS
    levels is taken in turn."""
    levels = qos if isinstance(qos, tuple) else (qos,)
    client, _ = connect(broker, "publisher", version)
    infos = [client.publish("d/t", str(i).encode(), levels[i % len(levels)]) for i in range(count)]
    for info in infos:
        info.wait_for_publish(20)
        assert info.is_published()
    disconnect(client)


def receive_all(broker: BrokerProcess, version: int, count: int) -> list[int]:
    client, collector = connect(broker, "durable-sub", version, clean=False, session_expiry=3600)
    collector.wait_for_messages(count, timeout=30)
    disconnect(client)
    return [int(m.payload) for m in collector.messages]


@pytest.mark.parametrize("version", [V311, V5])
def test_qos1_messages_survive_sigkill(broker_process: BrokerProcess, version: int) -> None:
    persistent_subscriber(broker_process, version, "d/#", 1)
    publish_all(broker_process, version, 1000, 1)
    broker_process.restart()
    received = receive_all(broker_process, version, 1000)
    first_seen = list(dict.fromkeys(received))
    assert first_seen == list(range(1000)), "missing or out of order after the crash"


@pytest.mark.parametrize("version", [V311, V5])
def test_qos2_exactly_once_across_sigkill(broker_process: BrokerProcess, version: int) -> None:
    persistent_subscriber(broker_process, version, "d/#", 2)
    publish_all(broker_process, version, 1000, 2)
    broker_process.restart()
    received = receive_all(broker_process, version, 1000)
    assert received == list(range(1000))


def live_subscriber(broker: BrokerProcess, qos: int | None = None) -> RawClient:
    """A raw MQTT 5 client on the persistent session "live-sub", subscribed to d/# at
    ``qos`` (None: resuming); it acknowledges nothing by itself."""
    client = RawClient(broker.host, broker.port, 5)
    connack = client.connect("live-sub", clean=False, session_expiry=3600)
    assert connack is not None and connack.reason_code == 0, connack
    if qos is not None:
        client.subscribe(1, [("d/#", qos)])
    return client


def receive_acknowledging(client: RawClient, count: int) -> list[Pkt]:
    """The first ``count`` PUBLISHes, each acknowledged through to its end."""
    publishes: list[Pkt] = []
    while len(publishes) < count:
        packet = client.recv()
        if packet.name == "PUBREL":
            client.ack("PUBCOMP", packet.packet_id)
            continue
        assert packet.name == "PUBLISH", packet
        publishes.append(packet)
        client.ack("PUBACK" if packet.qos == 1 else "PUBREC", packet.packet_id)
    return publishes


@pytest.mark.parametrize("qos", [1, 2])
def test_unacknowledged_deliveries_to_a_connected_subscriber_survive_sigkill(
    broker_process: BrokerProcess, qos: int
) -> None:
    """Sent to a subscriber that is connected but has acknowledged nothing when the broker
    is killed (QoS 1 ones then live only in their message's row): after a restart the
    session gets every message whose PUBACK / PUBCOMP went out, in order; QoS 2 ones again
    under the packet identifiers they were first sent with, as duplicates."""
    subscriber = live_subscriber(broker_process, qos)
    publish_all(broker_process, V5, 500, qos)
    broker_process.kill()
    before = {int(p.payload): p.packet_id for p in subscriber.wait_closed() if p.name == "PUBLISH"}
    assert before, "nothing reached the subscriber before the crash"

    broker_process.start()
    publishes = receive_acknowledging(live_subscriber(broker_process), 500)
    received = [int(p.payload) for p in publishes]
    assert list(dict.fromkeys(received)) == list(range(500)), "missing or out of order"
    if qos == 2:
        assert received == list(range(500)), "a QoS 2 message came twice"
        for publish in publishes:
            if int(publish.payload) in before:
                assert publish.dup
                assert publish.packet_id == before[int(publish.payload)]


def test_mixed_qos_to_a_connected_subscriber_keeps_its_order_across_sigkill(
    broker_process: BrokerProcess,
) -> None:
    """One publisher alternates QoS 1 and QoS 2; the connected subscriber (QoS 2) has
    acknowledged nothing when the broker is killed. On resume what was in flight is sent
    first: a QoS 1 delivery sent before a QoS 2 one must be in flight again too, not
    queued behind it."""
    subscriber = live_subscriber(broker_process, 2)
    publish_all(broker_process, V5, 500, (1, 2))
    broker_process.kill()
    subscriber.wait_closed()

    broker_process.start()
    publishes = receive_acknowledging(live_subscriber(broker_process), 500)
    received = [int(p.payload) for p in publishes]
    assert list(dict.fromkeys(received)) == list(range(500)), "missing or out of order"


def test_retained_and_subscriptions_survive_sigkill(broker_process: BrokerProcess) -> None:
    client, _ = connect(broker_process, "retainer", V5)
    client.publish("r/a", b"kept", 1, retain=True).wait_for_publish(10)
    client.publish("r/b", b"gone", 1, retain=True).wait_for_publish(10)
    client.publish("r/b", b"", 1, retain=True).wait_for_publish(10)  # cleared
    disconnect(client)
    persistent_subscriber(broker_process, V5, "live/#", 1)
    broker_process.restart()

    late, collector = connect(broker_process, "late", V5)
    subscribe(late, collector, "r/#", 1)
    collector.wait_for_messages(1)
    disconnect(late)
    assert [(m.topic, m.payload, m.retain) for m in collector.messages] == [("r/a", b"kept", True)]

    # The subscription survived: a message published now reaches the offline session.
    publisher, _ = connect(broker_process, "publisher", V5)
    publisher.publish("live/x", b"after", 1).wait_for_publish(10)
    disconnect(publisher)
    sub, sub_collector = connect(
        broker_process, "durable-sub", V5, clean=False, session_expiry=3600
    )
    assert sub_collector.connacks[-1][0] == 0
    sub_collector.wait_for_messages(1)
    disconnect(sub)
    assert sub_collector.messages[0].payload == b"after"


def test_sigkill_mid_burst_keeps_every_acknowledged_message(
    broker_process: BrokerProcess,
) -> None:
    persistent_subscriber(broker_process, V311, "d/#", 1)
    client, _ = connect(broker_process, "publisher", V311)
    acked: list[int] = []
    lock = threading.Lock()

    def on_publish(client: object, userdata: object, mid: int, *args: object) -> None:
        with lock:
            acked.append(mid)

    client.on_publish = on_publish
    mids = {client.publish("d/t", str(i).encode(), 1).mid: i for i in range(5000)}
    wait_until(lambda: len(acked) >= 500, 20, "the first 500 PUBACKs")
    broker_process.kill()  # in the middle of the burst
    client.loop_stop()
    with lock:
        acknowledged = {mids[mid] for mid in acked}

    broker_process.start()
    sub, collector = connect(broker_process, "durable-sub", V311, clean=False)
    wait_until(
        lambda: acknowledged <= {int(m.payload) for m in collector.messages},
        30,
        "every acknowledged message",
    )
    disconnect(sub)
    received = [int(m.payload) for m in collector.messages]
    first_seen = list(dict.fromkeys(received))
    assert first_seen == sorted(first_seen), "order broken after the crash"


def test_corrupt_database_stops_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "roost.db").write_bytes(b"this is not a database" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "roost", "serve", "--port", "0", "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "roost.db" in result.stderr and "backup" in result.stderr
    assert (data / "roost.db").read_bytes().startswith(b"this is not a database")


def test_will_of_a_client_connected_at_the_crash_is_published_after_restart(
    broker_process: BrokerProcess,
) -> None:
    """The broker dying ends the connection without DISCONNECT: the will goes out
    [MQTT-3.1.2-8], even though the process could not send it before it died."""
    client, _ = connect(
        broker_process,
        "doomed",
        V5,
        clean=False,
        session_expiry=3600,
        will=("status/doomed", b"offline", 1, True),
    )
    # CONNACK is not held for the commit; a PUBACK is, and it comes after everything
    # this connection recorded before it, the session and its will included.
    client.publish("elsewhere", b"sync", 1).wait_for_publish(10)
    broker_process.kill()
    client.loop_stop()
    broker_process.start()

    watcher, collector = connect(broker_process, "watcher", V5)
    subscribe(watcher, collector, "status/#", 1)
    collector.wait_for_messages(1)
    watcher.publish("status/zz-marker", b"end", 1).wait_for_publish(10)
    collector.wait_for_messages(2)
    disconnect(watcher)
    assert [(m.topic, m.payload, m.retain) for m in collector.messages] == [
        ("status/doomed", b"offline", True),
        ("status/zz-marker", b"end", False),
    ]
