"""Small helpers around paho-mqtt clients for integration tests: connect and wait, collect
messages, wait for events with timeouts (never bare sleeps)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 10.0

V311 = mqtt.MQTTv311
V5 = mqtt.MQTTv5


def wait_until(
    predicate: Callable[[], bool], timeout: float = TIMEOUT, what: str = "condition"
) -> None:
    """Poll ``predicate`` until true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


class Collector:
    """Records what a paho client observes: messages, connects, disconnects."""

    def __init__(self) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.connacks: list[tuple[Any, Any]] = []  # (reason_code, properties)
        self.disconnects: list[Any] = []  # reason codes
        self.subacks: list[list[Any]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.disconnected = threading.Event()

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        self.connacks.append((rc, props))
        self.connected.set()

    def on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        self.disconnects.append(rc)
        self.disconnected.set()

    def on_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None
    ) -> None:
        self.subacks.append(list(rcs))

    def wait_for_messages(self, count: int, timeout: float = TIMEOUT) -> list[mqtt.MQTTMessage]:
        wait_until(
            lambda: len(self.messages) >= count,
            timeout,
            f"{count} messages (have {len(self.messages)})",
        )
        with self.lock:
            return list(self.messages)

    def payloads(self) -> list[bytes]:
        with self.lock:
            return [m.payload for m in self.messages]


def make_client(
    client_id: str = "",
    version: int = V5,
    clean: bool | None = None,
    collector: Collector | None = None,
) -> tuple[mqtt.Client, Collector]:
    """A paho client (callback API v2) wired to ``collector`` (a new Collector by default);
    not yet connected."""
    kwargs: dict[str, Any] = {"client_id": client_id, "protocol": version}
    if version != V5:
        kwargs["clean_session"] = True if clean is None else clean
    client = mqtt.Client(CallbackAPIVersion.VERSION2, **kwargs)
    client.max_inflight_messages_set(65535)
    if collector is None:
        collector = Collector()
    client.on_message = collector.on_message
    client.on_connect = collector.on_connect
    client.on_disconnect = collector.on_disconnect
    client.on_subscribe = collector.on_subscribe
    return client, collector


def start(
    client: mqtt.Client,
    collector: Collector,
    broker: Any,
    client_id: str = "",
    version: int = V5,
    clean: bool = True,
    session_expiry: int | None = None,
    keepalive: int = 60,
    properties: Properties | None = None,
) -> None:
    """Send CONNECT to ``broker`` (has .host/.port), start the loop and wait for the CONNACK,
    whatever its reason code."""
    connect_kwargs: dict[str, Any] = {"keepalive": keepalive}
    if version == V5:
        props = properties or Properties(PacketTypes.CONNECT)
        if session_expiry is not None:
            props.SessionExpiryInterval = session_expiry
        connect_kwargs["clean_start"] = clean
        connect_kwargs["properties"] = props
    client.connect(broker.host, broker.port, **connect_kwargs)
    client.loop_start()
    if not collector.connected.wait(TIMEOUT):
        client.loop_stop()
        raise AssertionError(f"no CONNACK for {client_id!r}")


def connect(
    broker: Any,
    client_id: str = "",
    version: int = V5,
    clean: bool = True,
    session_expiry: int | None = None,
    keepalive: int = 60,
    will: tuple[str, bytes, int, bool] | None = None,
    will_properties: Properties | None = None,
    properties: Properties | None = None,
    expect_success: bool = True,
) -> tuple[mqtt.Client, Collector]:
    """Connect a paho client to ``broker`` (has .host/.port), start its loop, wait for CONNACK."""
    client, collector = make_client(client_id, version, clean)
    if will is not None:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos, retain, properties=will_properties)
    start(
        client, collector, broker, client_id, version, clean, session_expiry, keepalive, properties
    )
    if expect_success:
        rc = collector.connacks[-1][0]
        assert not getattr(rc, "is_failure", bool(rc)), f"CONNACK refused: {rc}"
    return client, collector


def disconnect(client: mqtt.Client) -> None:
    """Normal DISCONNECT, sent before the network loop stops (paho closes its socket once
    DISCONNECT is written; stopping the loop earlier could leave it unsent)."""
    client.disconnect()
    wait_until(lambda: client.socket() is None, what="DISCONNECT to be sent")
    client.loop_stop()


def subscribe(
    client: mqtt.Client, collector: Collector, topic: str | list[Any], qos: int = 0, **kwargs: Any
) -> list[Any]:
    """Subscribe and wait for the SUBACK; returns its reason codes."""
    before = len(collector.subacks)
    if isinstance(topic, list):
        client.subscribe(topic, **kwargs)
    else:
        client.subscribe(topic, qos, **kwargs)
    wait_until(lambda: len(collector.subacks) > before, what=f"SUBACK for {topic}")
    return collector.subacks[before]


def publish_and_wait(
    client: mqtt.Client,
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    **kwargs: Any,
) -> None:
    """Publish and, for QoS > 0, wait until the flow completes."""
    info = client.publish(topic, payload, qos, retain, **kwargs)
    if qos:
        info.wait_for_publish(TIMEOUT)
        assert info.is_published(), f"publish of {payload!r} to {topic} not acknowledged"
