"""Every acknowledgement of a persistent session's change is sent once the change is on
disk: a broker killed with SIGKILL right after CONNACK, SUBACK, UNSUBACK or the close that
follows a client's DISCONNECT comes back with that change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from brokerproc import BrokerProcess
from rawmqtt import RawClient, frame, utf8


@pytest.fixture
def broker_process(tmp_path: Path) -> Iterator[BrokerProcess]:
    process = BrokerProcess(tmp_path / "data").start()
    yield process
    process.kill()


def persistent(broker: BrokerProcess, client_id: str) -> tuple[RawClient, bool]:
    """A raw MQTT 5 client with a persistent session; (client, session present)."""
    client = RawClient(broker.host, broker.port, 5)
    connack = client.connect(client_id, clean=False, session_expiry=3600)
    assert connack is not None and connack.name == "CONNACK" and connack.reason_code == 0
    return client, connack.session_present


def test_a_new_persistent_session_survives_a_kill_right_after_connack(
    broker_process: BrokerProcess,
) -> None:
    client, present = persistent(broker_process, "fresh")
    assert not present
    broker_process.restart()
    client.drop()
    _, present = persistent(broker_process, "fresh")
    assert present


def test_a_subscription_survives_a_kill_right_after_suback(broker_process: BrokerProcess) -> None:
    client, _ = persistent(broker_process, "subscriber")
    assert client.subscribe(1, [("kept/t", 1)]).reason_codes == [1]
    broker_process.restart()
    client.drop()
    client, present = persistent(broker_process, "subscriber")
    assert present
    publisher = RawClient(broker_process.host, broker_process.port, 5)
    publisher.connect("publisher")
    publisher.publish("kept/t", b"after the crash", qos=1, packet_id=1)
    assert client.expect("PUBLISH").payload == b"after the crash"


def test_an_unsubscribe_survives_a_kill_right_after_unsuback(
    broker_process: BrokerProcess,
) -> None:
    client, _ = persistent(broker_process, "unsubscriber")
    client.subscribe(1, [("gone/t", 1), ("marker", 1)])
    broker_process.restart()  # both subscriptions are durable now
    client.drop()
    client, _ = persistent(broker_process, "unsubscriber")
    client.send(frame(0xA2, b"\x00\x02\x00" + utf8("gone/t")))
    client.expect("UNSUBACK")
    broker_process.restart()
    client.drop()
    client, _ = persistent(broker_process, "unsubscriber")
    publisher = RawClient(broker_process.host, broker_process.port, 5)
    publisher.connect("publisher")
    publisher.publish("gone/t", b"not for you", qos=1, packet_id=1)
    publisher.publish("marker", b"marker", qos=1, packet_id=2)
    assert client.expect("PUBLISH").payload == b"marker"


def test_a_disconnect_that_discards_the_will_survives_a_kill(
    broker_process: BrokerProcess,
) -> None:
    client = RawClient(broker_process.host, broker_process.port, 4)
    # 3.1.1 CONNECT, clean session 0, a retained will on "wills/leaver".
    flags = 0x04 | 0x20  # will flag, will retain; clean session 0: a persistent session
    body = utf8("MQTT") + bytes([4, flags]) + b"\x00\x3c" + utf8("leaver")
    body += utf8("wills/leaver") + utf8("gone")
    client.send(frame(0x10, body))
    assert client.expect("CONNACK").reason_code == 0
    client.disconnect()
    assert client.wait_closed() == []  # the broker closes once the will is gone for good
    broker_process.restart()
    watcher = RawClient(broker_process.host, broker_process.port, 4)
    watcher.connect("watcher")
    watcher.subscribe(1, [("wills/#", 0), ("marker", 0)])
    watcher.publish("marker", b"m")
    assert watcher.expect("PUBLISH").topic == "marker"  # no retained will came first
