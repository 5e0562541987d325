"""Will messages: published on every abnormal end of a connection, never after a normal
DISCONNECT; QoS, retain and (MQTT 5) the will delay are honoured."""

from __future__ import annotations

import time
from typing import Any

import pytest

from paho_helpers import V5, Collector, publish_and_wait, subscribe, wait_until
from rawmqtt import LEVELS, Clients, clients_fixture
from roost.codec.packets import Disconnect, PubAck, Publish, Will
from roost.codec.properties import Properties

clients = clients_fixture()


def watch(clients: Clients, broker: Any, topic: str = "will/#", qos: int = 2) -> Collector:
    sub, collector = clients.paho(broker, client_id="will-watch", version=V5)
    subscribe(sub, collector, topic, qos)
    return collector


def publish_marker(clients: Clients, broker: Any) -> None:
    pub, _ = clients.paho(broker, client_id="marker-pub", version=V5)
    publish_and_wait(pub, "will/marker", b"marker", qos=1)


@LEVELS
@pytest.mark.parametrize("cause", ["socket-closed", "keep-alive", "reset", "protocol-error"])
def test_abnormal_end_publishes_will(broker: Any, clients: Clients, level: int, cause: str) -> None:
    collector = watch(clients, broker)
    raw = clients.raw(broker)
    will = Will(topic="will/dev", payload=cause.encode(), qos=1)
    keep_alive = 1 if cause == "keep-alive" else 60
    connack = raw.connect("dev", level=level, keep_alive=keep_alive, will=will)
    assert connack.reason_code == 0
    if cause == "socket-closed":
        raw.close()
    elif cause == "reset":
        raw.abort()
    elif cause == "protocol-error":
        raw.send(b"\x30\xff\xff\xff\xff\x7f")  # remaining length of five bytes
        raw.expect_closed(3)
    messages = collector.wait_for_messages(1, 4)
    assert [(m.topic, m.payload, m.qos) for m in messages] == [("will/dev", cause.encode(), 1)]


@LEVELS
def test_normal_disconnect_discards_will(broker: Any, clients: Clients, level: int) -> None:
    collector = watch(clients, broker)
    raw = clients.raw(broker)
    raw.connect("dev", level=level, will=Will(topic="will/dev", payload=b"must not appear"))
    raw.send_packet(Disconnect())
    raw.expect_closed(3)
    publish_marker(clients, broker)
    collector.wait_for_messages(1, 3)
    assert collector.payloads() == [b"marker"]


def test_disconnect_with_will_message_reason(broker: Any, clients: Clients) -> None:
    collector = watch(clients, broker)
    raw = clients.raw(broker)
    raw.connect("dev", level=5, will=Will(topic="will/dev", payload=b"asked for it"))
    raw.send_packet(Disconnect(reason_code=0x04))
    raw.close()
    collector.wait_for_messages(1, 3)
    assert collector.payloads() == [b"asked for it"]


@LEVELS
def test_will_qos_and_retain(broker: Any, clients: Clients, level: int) -> None:
    collector = watch(clients, broker)
    raw = clients.raw(broker)
    raw.connect("dev", level=level, will=Will("will/state", b"gone", qos=1, retain=True))
    raw.close()
    live = collector.wait_for_messages(1, 3)[0]
    assert (live.topic, live.payload, live.qos) == ("will/state", b"gone", 1)
    assert not live.retain, "a live delivery to an existing subscription has RETAIN 0"
    late_sub, late = clients.paho(broker, client_id="late", version=V5)
    subscribe(late_sub, late, "will/state", 2)
    retained = late.wait_for_messages(1, 3)[0]
    assert (retained.payload, retained.qos, retained.retain) == (b"gone", 1, True)


def connect_with_delay(clients: Clients, broker: Any, will_delay: int, session_expiry: int) -> Any:
    raw = clients.raw(broker)
    will = Will(
        "will/dev", b"delayed", qos=1, properties=Properties(will_delay_interval=will_delay)
    )
    connack = raw.connect(
        "dev",
        level=5,
        will=will,
        properties=Properties(session_expiry_interval=session_expiry),
    )
    assert connack.reason_code == 0
    return raw


def test_will_delay_interval(broker: Any, clients: Clients) -> None:
    collector = watch(clients, broker)
    raw = connect_with_delay(clients, broker, will_delay=2, session_expiry=10)
    dropped = time.monotonic()
    raw.close()
    collector.wait_for_messages(1, 4)
    elapsed = time.monotonic() - dropped
    assert 1.5 <= elapsed <= 3.5, f"will published {elapsed:.2f}s after the drop, expected ~2s"
    assert collector.payloads() == [b"delayed"]


def test_reconnect_within_will_delay_cancels_will(broker: Any, clients: Clients) -> None:
    collector = watch(clients, broker)
    raw = connect_with_delay(clients, broker, will_delay=2, session_expiry=10)
    dropped = time.monotonic()
    raw.close()
    again = clients.raw(broker)
    connack = again.connect(
        "dev", level=5, clean_start=False, properties=Properties(session_expiry_interval=10)
    )
    assert connack.reason_code == 0 and connack.session_present
    assert time.monotonic() - dropped < 1.5
    again.expect_silence(dropped + 3.0 - time.monotonic())
    publish_marker(clients, broker)
    collector.wait_for_messages(1, 3)
    assert collector.payloads() == [b"marker"]
    again.send_packet(Disconnect())


def test_session_end_before_will_delay_publishes_will(broker: Any, clients: Clients) -> None:
    collector = watch(clients, broker)
    raw = connect_with_delay(clients, broker, will_delay=10, session_expiry=1)
    dropped = time.monotonic()
    raw.close()
    collector.wait_for_messages(1, 4)
    elapsed = time.monotonic() - dropped
    assert 0.9 <= elapsed <= 3.0, f"will published {elapsed:.2f}s after the drop, expected ~1s"
    assert collector.payloads() == [b"delayed"]


@LEVELS
def test_presence_online_then_offline(broker: Any, clients: Clients, level: int) -> None:
    collector = watch(clients, broker, "presence/dev")
    raw = clients.raw(broker)
    raw.connect("dev", level=level, will=Will("presence/dev", b"offline", qos=1, retain=True))
    raw.send_packet(Publish("presence/dev", b"online", qos=1, retain=True, packet_id=1))
    puback = raw.recv_packet(3)
    assert isinstance(puback, PubAck) and puback.packet_id == 1, puback
    collector.wait_for_messages(1, 3)
    raw.abort()
    wait_until(lambda: collector.payloads() == [b"online", b"offline"], 3, "offline will")
    late_sub, late = clients.paho(broker, client_id="late", version=V5)
    subscribe(late_sub, late, "presence/dev", 1)
    late.wait_for_messages(1, 3)
    assert [(m.payload, m.retain) for m in late.messages] == [(b"offline", True)]
