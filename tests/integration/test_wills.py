"""Will messages: published on every abnormal end of a connection (the server's own close
included), never after a normal DISCONNECT; QoS, retain and (MQTT 5) the will delay are
honoured.

Will-delay tests run the broker on a ManualClock: broker time is moved to just before the
delay ends (no will yet) and then to its end (the will goes out)."""

from __future__ import annotations

from typing import Any

import pytest

from brokerthread import MOMENT, ManualClock
from paho_helpers import V5, Clients, Conn
from rawmqtt import LEVELS, RawClient, RawFactory, Will, publish_bytes


def watch(clients: Clients, broker: Any, topic: str = "will/#", qos: int = 2) -> Conn:
    watcher = clients.connect(broker, "will-watch", V5)
    watcher.sub(topic, qos)
    return watcher


def publish_marker(clients: Clients, broker: Any, topic: str = "will/marker") -> bytes:
    """A QoS 1 message after everything the broker has sent so far; returns its payload."""
    clients.connect(broker, f"marker-{len(clients.all)}", V5).pub(topic, b"marker", qos=1)
    return b"marker"


def assert_nothing_before_marker(watcher: Conn, clients: Clients, broker: Any) -> None:
    """The watcher has received nothing (no will) up to now."""
    marker = publish_marker(clients, broker)
    watcher.wait_for_payload(marker)
    assert watcher.before(marker) == [], [m.payload for m in watcher.messages]


@LEVELS
@pytest.mark.parametrize("cause", ["socket-closed", "keep-alive", "reset", "protocol-error"])
def test_abnormal_end_publishes_will(
    make_broker: Any,
    clock: ManualClock,
    clients: Clients,
    raw: RawFactory,
    level: int,
    cause: str,
) -> None:
    broker = make_broker(clock=clock)
    watcher = watch(clients, broker)
    will = Will("will/dev", cause.encode(), qos=1)
    keep_alive = 1 if cause == "keep-alive" else 60
    client, _ = raw.connected(broker, "dev", level, keep_alive=keep_alive, will=will)
    if cause == "socket-closed":
        client.drop()
    elif cause == "reset":
        client.abort()
    elif cause == "keep-alive":
        broker.advance(1.5)
    elif cause == "protocol-error":
        client.send(b"\x30\xff\xff\xff\xff\x7f")  # remaining length of five bytes
        client.wait_closed(3)
    messages = watcher.wait_for_messages(1, 4)
    assert [(m.topic, m.payload, m.qos) for m in messages] == [("will/dev", cause.encode(), 1)]


@LEVELS
def test_normal_disconnect_discards_will(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    watcher = watch(clients, broker)
    client, _ = raw.connected(broker, "dev", level, will=Will("will/dev", b"must not appear"))
    client.disconnect()
    client.wait_closed(3)
    assert_nothing_before_marker(watcher, clients, broker)


def test_disconnect_with_will_message_reason(
    broker: Any, clients: Clients, raw: RawFactory
) -> None:
    watcher = watch(clients, broker)
    client, _ = raw.connected(broker, "dev", 5, will=Will("will/dev", b"asked for it"))
    client.disconnect(0x04)
    client.drop()
    watcher.wait_for_messages(1, 3)
    assert watcher.payloads() == [b"asked for it"]


def test_bytes_after_disconnect_are_ignored(broker: Any, clients: Clients, raw: RawFactory) -> None:
    """After DISCONNECT the server closes the connection and acts on nothing more from it
    [MQTT-3.14.4-1, -2]: a PUBLISH in the same segment is not routed, no will is sent."""
    watcher = watch(clients, broker, "ad/#", 0)
    client, _ = raw.connected(broker, "ad-dev", 5, will=Will("ad/will", b"will"))
    client.send(b"\xe0\x00" + publish_bytes(b"ad/after", b"after", level=5))
    assert client.wait_closed() == []
    marker = publish_marker(clients, broker, "ad/marker")
    watcher.wait_for_payload(marker)
    assert watcher.before(marker) == [], [m.payload for m in watcher.messages]


@LEVELS
def test_will_qos_and_retain(broker: Any, clients: Clients, raw: RawFactory, level: int) -> None:
    watcher = watch(clients, broker)
    client, _ = raw.connected(broker, "dev", level, will=Will("will/state", b"gone", 1, True))
    client.drop()
    live = watcher.wait_for_messages(1, 3)[0]
    assert (live.topic, live.payload, live.qos) == ("will/state", b"gone", 1)
    assert not live.retain, "a live delivery to an existing subscription has RETAIN 0"
    late = clients.connect(broker, "late", V5)
    late.sub("will/state", 2)
    retained = late.wait_for_messages(1, 3)[0]
    assert (retained.payload, retained.qos, retained.retain) == (b"gone", 1, True)


@LEVELS
def test_presence_online_then_offline(
    broker: Any, clients: Clients, raw: RawFactory, level: int
) -> None:
    watcher = watch(clients, broker, "presence/dev")
    will = Will("presence/dev", b"offline", qos=1, retain=True)
    client, _ = raw.connected(broker, "dev", level, will=will)
    client.publish("presence/dev", b"online", qos=1, packet_id=1, retain=True)
    assert client.expect("PUBACK", 3).packet_id == 1
    watcher.wait_for_payload(b"online")
    client.abort()
    watcher.wait_for_payload(b"offline")
    assert watcher.payloads() == [b"online", b"offline"]
    late = clients.connect(broker, "late", V5)
    late.sub("presence/dev", 1)
    late.wait_for_messages(1, 3)
    assert [(m.payload, m.retain) for m in late.messages] == [(b"offline", True)]


# --------------------------------------------------------------------------------------------
# server-side ends: takeover


def test_takeover_sends_0x8e_and_publishes_will_once(
    broker: Any, clients: Clients, raw: RawFactory
) -> None:
    """Takeover: the old connection gets DISCONNECT 0x8E [MQTT-3.1.4-3] and, the server
    having closed it without DISCONNECT 0x00, its will (delay 0) goes out exactly once
    [MQTT-3.1.2-8]; the resumed session is present."""
    watcher = watch(clients, broker, "tw/#", 1)
    old, _ = raw.connected(
        broker, "tw-dev", 5, session_expiry=300, will=Will("tw/status", b"gone", 1)
    )
    new, connack = raw.connected(broker, "tw-dev", 5, clean=False, session_expiry=300)
    assert connack.session_present
    closing = old.wait_closed()
    assert [(p.name, p.reason_code) for p in closing] == [("DISCONNECT", 0x8E)]
    watcher.wait_for_payload(b"gone")
    new.disconnect()
    marker = publish_marker(clients, broker, "tw/marker")
    watcher.wait_for_payload(marker)
    assert watcher.payloads().count(b"gone") == 1


# --------------------------------------------------------------------------------------------
# MQTT 5 will delay


def delayed_will_client(
    raw: RawFactory, broker: Any, will_delay: int, session_expiry: int, client_id: str = "dev"
) -> RawClient:
    will = Will("will/dev", b"delayed", qos=1, props=[("WillDelayInterval", will_delay)])
    client, _ = raw.connected(broker, client_id, 5, session_expiry=session_expiry, will=will)
    return client


def drop(client: RawClient, broker: Any, client_id: str = "dev") -> None:
    """End the connection without DISCONNECT; returns once the broker has noticed."""
    client.drop()
    broker.wait_offline(client_id)


@pytest.mark.parametrize(
    ("will_delay", "session_expiry", "due"),
    [(2, 10, 2), (10, 1, 1)],
    ids=["after-the-delay", "at-the-end-of-the-session"],
)
def test_a_delayed_will_goes_out_at_its_delay_or_the_session_end(
    make_broker: Any,
    clock: ManualClock,
    clients: Clients,
    raw: RawFactory,
    will_delay: int,
    session_expiry: int,
    due: int,
) -> None:
    """The will is sent when its delay has passed or the session ends, whichever comes
    first [MQTT-3.1.3-9]."""
    broker = make_broker(clock=clock)
    watcher = watch(clients, broker)
    client = delayed_will_client(raw, broker, will_delay=will_delay, session_expiry=session_expiry)
    drop(client, broker)
    broker.advance(due - MOMENT)
    assert_nothing_before_marker(watcher, clients, broker)
    broker.advance(MOMENT)
    assert watcher.wait_for_payload(b"delayed").topic == "will/dev"


def test_reconnect_within_will_delay_cancels_will(
    make_broker: Any, clock: ManualClock, clients: Clients, raw: RawFactory
) -> None:
    broker = make_broker(clock=clock)
    watcher = watch(clients, broker)
    drop(delayed_will_client(raw, broker, will_delay=2, session_expiry=10), broker)
    broker.advance(2 - MOMENT)
    again, connack = raw.connected(broker, "dev", 5, clean=False, session_expiry=10)
    assert connack.session_present
    broker.advance(8)  # well past the end of the delay
    assert_nothing_before_marker(watcher, clients, broker)
    again.disconnect()


def test_takeover_within_will_delay_suppresses_will(
    make_broker: Any, clock: ManualClock, clients: Clients, raw: RawFactory
) -> None:
    """A new connection to the session before the Will Delay Interval has passed: the will
    MUST NOT be sent [MQTT-3.1.3-9], even though the old connection was taken over."""
    broker = make_broker(clock=clock)
    watcher = watch(clients, broker)
    old = delayed_will_client(raw, broker, will_delay=1, session_expiry=300)
    new, connack = raw.connected(broker, "dev", 5, clean=False, session_expiry=300)
    assert connack.session_present
    old.wait_closed()
    broker.advance(5)
    assert_nothing_before_marker(watcher, clients, broker)
    new.disconnect()


def test_delayed_will_survives_graceful_shutdown(
    make_broker: Any, clock: ManualClock, clients: Clients, raw: RawFactory
) -> None:
    """The server closing the connection without having received DISCONNECT 0x00 is one of
    the situations in which the will MUST be published, after its delay or when the
    session ends [MQTT-3.1.2-8]. With a 1 s will delay and a 300 s session, the retained
    will must be there once the delay has passed after a shutdown and restart."""
    broker = make_broker(clock=clock)
    will = Will("sd/status", b"offline", 1, True, props=[("WillDelayInterval", 1)])
    raw.connected(broker, "sd-dev", 5, session_expiry=300, will=will)
    broker = make_broker.restart(broker)
    broker.advance(1)
    watcher = clients.connect(broker, "sd-watch", V5)
    watcher.sub("sd/status", 1)
    assert watcher.wait_for_payload(b"offline", timeout=3).retain
