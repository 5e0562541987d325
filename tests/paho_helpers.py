"""Helpers around paho-mqtt clients for integration tests: connect and wait, collect what a
client observes, wait for events with timeouts (never bare sleeps).

``Clients`` (the ``clients`` fixture of tests/clientfixtures.py) connects ``Conn``
objects: a paho client with its ``Collector``, stopped at teardown. The functions below it
(``connect``, ``subscribe``, ...) work on a bare paho client and its collector."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

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


def code_of(rc: Any) -> int:
    """The integer value of a paho ReasonCode (or a plain int)."""
    return int(getattr(rc, "value", rc))


class Collector:
    """Records what a paho client observes: messages, CONNACKs (with the session-present
    flag), SUBACKs, UNSUBACKs and disconnects."""

    def __init__(self) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.connacks: list[tuple[Any, Any]] = []  # (reason_code, properties)
        self.session_present: list[bool] = []  # one per CONNACK
        self.disconnects: list[Any] = []  # reason codes
        self.subacks: list[list[Any]] = []
        self.unsubacks: list[list[int]] = []
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.disconnected = threading.Event()

    def on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append(msg)

    def on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        self.session_present.append(bool(getattr(flags, "session_present", False)))
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

    def on_unsubscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, rcs: Any, props: Any = None
    ) -> None:
        self.unsubacks.append([code_of(rc) for rc in rcs])

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

    def topics(self) -> list[str]:
        with self.lock:
            return [m.topic for m in self.messages]

    def by_payload(self, payload: bytes) -> list[mqtt.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.payload == payload]

    def wait_for_payload(self, payload: bytes, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        wait_until(lambda: bool(self.by_payload(payload)), timeout, f"message {payload!r}")
        return self.by_payload(payload)[0]

    def before(self, payload: bytes) -> list[mqtt.MQTTMessage]:
        """Messages received before the first one carrying ``payload`` (a marker)."""
        with self.lock:
            out = []
            for m in self.messages:
                if m.payload == payload:
                    return out
                out.append(m)
        raise AssertionError(f"marker {payload!r} not received")


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
    client.on_unsubscribe = collector.on_unsubscribe
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
    prepare: Callable[[mqtt.Client], None] | None = None,
) -> tuple[mqtt.Client, Collector]:
    """Connect a paho client to ``broker`` (has .host/.port), start its loop, wait for CONNACK.
    ``prepare`` sets the client up first (TLS, WebSocket transport)."""
    client, collector = make_client(client_id, version, clean)
    if prepare is not None:
        prepare(client)
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


class Conn:
    """One connected paho client with its collector; unknown attributes come from the
    collector (``messages``, ``wait_for_payload``, ``before``, ``session_present`` ...)."""

    def __init__(self, client: mqtt.Client, col: Collector) -> None:
        self.client = client
        self.col = col

    def __getattr__(self, name: str) -> Any:
        return getattr(self.col, name)

    @property
    def connack_rc(self) -> int:
        return code_of(self.col.connacks[-1][0])

    @property
    def connack_props(self) -> Any:
        return self.col.connacks[-1][1]

    def sub(
        self,
        topic: str,
        qos: int = 0,
        *,
        no_local: bool = False,
        retain_as_published: bool = False,
        retain_handling: int = 0,
        sub_id: int | None = None,
    ) -> list[int]:
        """Subscribe one filter (v5 options when the client speaks v5); wait for the SUBACK
        and return its reason codes as ints."""
        if self.client.protocol != V5:
            return [code_of(rc) for rc in subscribe(self.client, self.col, topic, qos)]
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        options = SubscribeOptions(
            qos=qos,
            noLocal=no_local,
            retainAsPublished=retain_as_published,
            retainHandling=retain_handling,
        )
        # The options carry the QoS: paho refuses a non-zero ``qos`` alongside them.
        codes = subscribe(self.client, self.col, topic, options=options, properties=props)
        return [code_of(rc) for rc in codes]

    def sub_many(self, filters: list[tuple[str, int]]) -> list[int]:
        """One SUBSCRIBE with several ``(filter, qos)``; returns the SUBACK codes."""
        return [code_of(rc) for rc in subscribe(self.client, self.col, filters)]

    def unsub(self, topics: str | list[str]) -> list[int]:
        """Unsubscribe and wait for the UNSUBACK; returns its reason codes (empty for 3.1.1)."""
        before = len(self.col.unsubacks)
        self.client.unsubscribe(topics)
        wait_until(lambda: len(self.col.unsubacks) > before, what="UNSUBACK")
        return self.col.unsubacks[before]

    def pub(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """Publish; for QoS > 0 wait until the flow with the broker completes."""
        publish_and_wait(self.client, topic, payload, qos, retain, properties=properties)

    def stop(self) -> None:
        """Disconnect normally (if still connected) and stop the network loop."""
        try:
            if self.client.is_connected():
                disconnect(self.client)
        finally:
            self.client.loop_stop()


class Clients:
    """Connects paho clients and remembers them so teardown can stop their loops."""

    def __init__(self) -> None:
        self.all: list[Conn] = []

    def connect(
        self,
        broker: Any,
        client_id: str = "",
        version: int = V5,
        clean: bool = True,
        expect_success: bool = True,
        **options: Any,
    ) -> Conn:
        """Connect, start the loop and wait for the CONNACK (which must be a success unless
        ``expect_success`` is false). ``options`` (``session_expiry``, ``keepalive``,
        ``will``, ``will_properties``, ``properties``, ``prepare``) go to :func:`connect`."""
        client, col = connect(
            broker, client_id, version, clean, expect_success=expect_success, **options
        )
        # Never reconnect on its own within a test: a client closed by the broker (takeover,
        # keep-alive timeout) must stay closed.
        client.reconnect_delay_set(min_delay=60, max_delay=120)
        conn = Conn(client, col)
        self.all.append(conn)
        return conn

    def close_all(self) -> None:
        for conn in self.all:
            with contextlib.suppress(Exception):
                conn.stop()


def publish_half_message(
    conn: Conn, topic: str, payload: bytes, transaction_id: str, group: str
) -> None:
    """Publish a transaction's half message (QoS 1, see docs/transactions.md) and wait
    for its PUBACK: once this returns, the transaction is pending on the broker."""
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("roost-tx-id", transaction_id), ("roost-tx-group", group)]
    info = conn.client.publish(topic, payload, 1, properties=props)
    info.wait_for_publish(TIMEOUT)
    assert info.is_published(), f"half message {transaction_id} not acknowledged"
