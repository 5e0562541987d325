"""Topic aliases the broker assigns on what it sends to MQTT 5 clients that accept them
[MQTT-3.3.2.3.4]: the first PUBLISH of a topic sets the alias, later ones carry only the
alias, and aliases start afresh with each network connection."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho_helpers import TIMEOUT, V5, disconnect, wait_until

LONG_TOPIC = "building/north/floor-12/room-1207/sensors/temperature"


class AliasResolvingClient:
    """A paho 5.0 client that accepts topic aliases and resolves them as a client must:
    one alias table per network connection."""

    def __init__(self, broker: Any, client_id: str, alias_maximum: int) -> None:
        self.lock = threading.Lock()
        self.received: list[tuple[str, bytes, int | None, str]] = []  # resolved, payload,
        # alias, topic as sent
        self.aliases: dict[int, str] = {}
        self.connected = threading.Event()
        self.subacks = 0
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=V5
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.max_inflight_messages_set(65535)
        props = Properties(PacketTypes.CONNECT)
        props.TopicAliasMaximum = alias_maximum
        self.broker = broker
        self.props = props

    def connect(self) -> None:
        self.connected.clear()
        self.client.connect(self.broker.host, self.broker.port, properties=self.props)
        self.client.loop_start()
        assert self.connected.wait(TIMEOUT)

    def subscribe(self, topic_filter: str, qos: int) -> None:
        """Subscribe and wait for the SUBACK: the broker sends it once the subscription is in
        place, so what is published from then on reaches this client."""
        before = self.subacks
        self.client.subscribe(topic_filter, qos=qos)
        wait_until(lambda: self.subacks > before, what=f"SUBACK for {topic_filter}")

    def _on_subscribe(self, client: Any, userdata: Any, mid: Any, rcs: Any, props: Any) -> None:
        self.subacks += 1

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self.lock:
            self.aliases = {}  # a new connection: no alias is known [MQTT-3.3.2-7]
        self.connected.set()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        alias = getattr(message.properties, "TopicAlias", None)
        with self.lock:
            topic = message.topic
            if alias is not None:
                if topic:
                    self.aliases[alias] = topic
                else:
                    topic = self.aliases[alias]
            self.received.append((topic, message.payload, alias, message.topic))

    def stop(self) -> None:
        disconnect(self.client)  # DISCONNECT is sent before the network loop stops


def publish_each(broker: Any, clients: Any, topics: list[str], payload: bytes) -> None:
    publisher = clients.connect(broker, "alias-publisher")
    for topic in topics:
        publisher.client.publish(topic, payload, qos=1).wait_for_publish(TIMEOUT)


def test_repeated_topics_are_sent_as_aliases_and_resolved(make_broker, clients) -> None:
    broker = make_broker()
    subscriber = AliasResolvingClient(broker, "alias-sub", alias_maximum=2)
    subscriber.connect()
    try:
        subscriber.subscribe("building/#", qos=1)
        topics = [LONG_TOPIC, LONG_TOPIC, "building/b", LONG_TOPIC, "building/c", LONG_TOPIC]
        publish_each(broker, clients, topics, b"x")
        wait_until(lambda: len(subscriber.received) == len(topics), what="all messages")
        assert [entry[0] for entry in subscriber.received] == topics
        sent_topics = [entry[3] for entry in subscriber.received]
        # The first send of LONG_TOPIC sets its alias; the repeats carry the alias alone.
        assert sent_topics[0] == LONG_TOPIC and subscriber.received[0][2] is not None
        assert sent_topics[1] == "" and sent_topics[3] == ""
        assert all(entry[2] in (1, 2) for entry in subscriber.received)
        # A reconnect starts a new alias table: the topic is sent again with its alias.
        subscriber.stop()
        subscriber.connect()
        subscriber.subscribe("building/#", qos=1)
        before = len(subscriber.received)
        publish_each(broker, clients, [LONG_TOPIC, LONG_TOPIC], b"y")
        wait_until(lambda: len(subscriber.received) == before + 2, what="messages after reconnect")
        again = subscriber.received[before:]
        assert [entry[0] for entry in again] == [LONG_TOPIC, LONG_TOPIC]
        assert again[0][3] == LONG_TOPIC and again[1][3] == ""
    finally:
        subscriber.stop()


def test_no_aliases_for_a_client_that_accepts_none(make_broker, clients) -> None:
    broker = make_broker()
    subscriber = AliasResolvingClient(broker, "no-alias-sub", alias_maximum=0)
    subscriber.connect()
    try:
        subscriber.subscribe("building/#", qos=0)
        publish_each(broker, clients, [LONG_TOPIC] * 3, b"z")
        wait_until(lambda: len(subscriber.received) == 3, what="all messages")
        assert all(entry[2] is None and entry[3] == LONG_TOPIC for entry in subscriber.received)
    finally:
        subscriber.stop()
