"""ServerConnection without I/O: a fake transport and a fake clock drive BrokerCore directly."""

from __future__ import annotations

from typing import Any

import pytest

from roost import protocol
from roost.codec import (
    MQTT_3_1_1,
    MQTT_5,
    ConnAck,
    Connect,
    Disconnect,
    Framer,
    Packet,
    PingReq,
    PingResp,
    Properties,
    PubAck,
    PubComp,
    Publish,
    PubRec,
    PubRel,
    SubAck,
    Subscribe,
    Subscription,
    UnsubAck,
    Unsubscribe,
    Will,
    encode,
)
from roost.config import Settings
from roost.core import BrokerCore
from roost.protocol import CONNECT_TIMEOUT, ServerConnection, Transport
from roost.session import NO_INFLIGHT, NO_PACKET_IDS, NO_SUBSCRIPTIONS
from roost.store.memory import MemoryStore


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTransport:
    """Collects what the protocol writes and decodes it at the client's level."""

    def __init__(self, level: int, peer: str = "fake:1") -> None:
        self.peer = peer
        self.certificate: dict[str, object] | None = None
        self.identity: str | None = None
        self.closed = False
        self.later = False
        self.writes_after_close = 0
        self.raw = bytearray()
        self.framer = Framer()
        self.framer.protocol_level = level

    def write(self, data: bytes) -> None:
        if self.closed:
            self.writes_after_close += 1
        self.raw += data
        self.framer.feed(data)

    def close(self) -> None:
        self.closed = True

    def pause_reading(self, reason: int) -> None:
        pass

    def resume_reading(self, reason: int) -> None:
        pass

    def continue_later(self) -> None:
        self.later = True  # the test's loop calls handle_input again

    def flush(self) -> None:
        pass  # written at once

    def attach(self, connection: ServerConnection) -> None:
        connection.complete_connect()  # nothing to wait for

    def packets(self) -> list[Packet]:
        """Packets written since the last call."""
        return list(self.framer)


class Client:
    """One simulated network connection to the core."""

    def __init__(self, core: BrokerCore, level: int = MQTT_5) -> None:
        self.level = level
        self.transport = FakeTransport(level)
        as_transport: Transport = self.transport
        self.protocol = ServerConnection(core, as_transport)
        self.pending: list[Packet] = []  # read along with the CONNACK, not yet looked at

    def send(self, *packets: Packet) -> None:
        self.protocol.data_received(b"".join(encode(packet, self.level) for packet in packets))
        while self.transport.later:  # what a loop turn of the shell would do
            self.transport.later = False
            self.protocol.handle_input()

    def received(self) -> list[Packet]:
        packets, self.pending = [*self.pending, *self.transport.packets()], []
        return packets

    def connect(self, client_id: str, **kwargs: Any) -> ConnAck:
        self.send(Connect(client_id, protocol_level=self.level, **kwargs))
        connack, *self.pending = self.received()
        assert isinstance(connack, ConnAck)
        return connack

    def subscribe(self, topic_filter: str, qos: int = 1, packet_id: int = 1) -> list[Packet]:
        self.send(Subscribe(packet_id, (Subscription(topic_filter, qos),)))
        packets = self.received()
        assert isinstance(packets[0], SubAck), packets
        assert packets[0].reason_codes == (qos,)
        return packets[1:]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_core(clock: FakeClock, **overrides: Any) -> BrokerCore:
    return BrokerCore(Settings(store="memory", **overrides), clock, MemoryStore())


@pytest.fixture
def core(clock: FakeClock) -> BrokerCore:
    return make_core(clock)


def publishes(packets: list[Packet]) -> list[Publish]:
    assert all(isinstance(p, Publish) for p in packets), packets
    return [p for p in packets if isinstance(p, Publish)]


# -- CONNECT ------------------------------------------------------------------------------


def test_connect_v5_gets_connack_with_default_properties(core: BrokerCore) -> None:
    client = Client(core)
    connack = client.connect("c1", keep_alive=30)
    assert connack == ConnAck(
        False,
        0,
        Properties(
            receive_maximum=1024,
            retain_available=1,
            maximum_packet_size=1_048_576,
            topic_alias_maximum=64,
            wildcard_subscription_available=1,
            subscription_identifier_available=1,
            shared_subscription_available=1,
        ),
    )
    assert not client.transport.closed
    assert core.connections["c1"] is client.protocol


def test_connack_properties_follow_the_settings(clock: FakeClock) -> None:
    core = make_core(
        clock,
        receive_maximum=10,
        maximum_qos=1,
        retain_available=False,
        max_packet_size=5000,
        topic_alias_maximum=5,
        wildcard_subscription_available=False,
        subscription_identifier_available=False,
        shared_subscription_available=False,
        max_session_expiry=100,
        max_keep_alive=30,
    )
    connack = Client(core).connect(
        "c1", keep_alive=60, properties=Properties(session_expiry_interval=1000)
    )
    assert connack.reason_code == 0
    assert connack.properties == Properties(
        session_expiry_interval=100,
        receive_maximum=10,
        maximum_qos=1,
        retain_available=0,
        maximum_packet_size=5000,
        topic_alias_maximum=5,
        wildcard_subscription_available=0,
        subscription_identifier_available=0,
        shared_subscription_available=0,
        server_keep_alive=30,
    )
    assert core.connections["c1"].keep_alive == 30
    assert core.sessions["c1"].expiry_interval == 100


def test_empty_client_id_gets_an_assigned_identifier(core: BrokerCore) -> None:
    client = Client(core)
    connack = client.connect("")
    assigned = connack.properties.assigned_client_identifier
    assert assigned is not None and assigned.startswith("roost-")
    assert core.connections[assigned] is client.protocol


def test_connect_v311_gets_a_plain_connack(core: BrokerCore) -> None:
    client = Client(core, MQTT_3_1_1)
    assert client.connect("c1") == ConnAck(False, 0)


def test_publish_before_connect_closes_without_reply(core: BrokerCore) -> None:
    client = Client(core)
    client.send(Publish("a/b", b"x"))
    assert client.transport.raw == b""
    assert client.transport.closed
    assert client.protocol.closed
    assert client.protocol not in core.open_connections
    client.send(Connect("late", protocol_level=MQTT_5))  # ignored once closed
    assert client.transport.raw == b""
    assert core.connections == {}


def test_second_connect_is_a_protocol_error(core: BrokerCore) -> None:
    client = Client(core)
    client.connect("c1")
    client.send(Connect("c1", protocol_level=MQTT_5))
    packets = client.received()
    assert len(packets) == 1
    assert isinstance(packets[0], Disconnect)
    assert packets[0].reason_code == 0x82
    assert client.transport.closed
    assert client.transport.writes_after_close == 0
    assert "c1" not in core.connections


def test_second_connect_v311_closes_silently(core: BrokerCore) -> None:
    client = Client(core, MQTT_3_1_1)
    client.connect("c1")
    client.send(Connect("c1"))
    assert client.received() == []
    assert client.transport.closed


def test_connect_timeout_closes_a_silent_connection(clock: FakeClock, core: BrokerCore) -> None:
    client = Client(core)
    clock.now += CONNECT_TIMEOUT - 0.25
    core.tick()
    assert not client.transport.closed
    clock.now += 0.25
    core.tick()
    assert client.transport.closed
    assert client.transport.raw == b""
    assert core.open_connections == set()


def test_connect_timeout_counts_from_the_connection_start(
    clock: FakeClock, core: BrokerCore
) -> None:
    client = Client(core)
    data = encode(Connect("slow", protocol_level=MQTT_5), MQTT_5)
    for index in range(len(data) - 1):
        clock.now += CONNECT_TIMEOUT - 1
        client.protocol.data_received(data[index : index + 1])
        core.tick()
    assert client.transport.closed


# -- keep alive and wills ------------------------------------------------------------------


def test_keepalive_deadline_is_one_and_a_half_keep_alive(
    clock: FakeClock, core: BrokerCore
) -> None:
    client = Client(core)
    assert client.protocol.keepalive_deadline() == 1000.0 + CONNECT_TIMEOUT
    client.connect("c1", keep_alive=10)
    assert client.protocol.keepalive_deadline() == 1015.0
    clock.now = 1004.0
    client.send(PingReq())
    assert client.received() == [PingResp()]
    assert client.protocol.keepalive_deadline() == 1019.0


def test_keep_alive_zero_has_no_deadline(clock: FakeClock, core: BrokerCore) -> None:
    client = Client(core, MQTT_3_1_1)
    client.connect("c1", keep_alive=0)
    assert client.protocol.keepalive_deadline() is None
    clock.now += 10**6
    core.tick()
    assert not client.transport.closed


def test_keep_alive_timeout_closes_and_publishes_the_will(
    clock: FakeClock, core: BrokerCore
) -> None:
    watcher = Client(core)
    watcher.connect("watcher", keep_alive=0)
    assert watcher.subscribe("will/#", qos=1) == []
    silent = Client(core)
    silent.connect(
        "silent",
        keep_alive=10,
        will=Will("will/silent", b"gone", qos=1, properties=Properties(content_type="t")),
    )
    clock.now = 1006.0
    silent.send(PingReq())
    assert silent.received() == [PingResp()]
    assert silent.protocol.keepalive_deadline() == 1021.0

    clock.now = 1015.0  # the first scheduled check: heard from since, so re-scheduled
    core.tick()
    assert not silent.transport.closed
    assert len(core.keepalive) == 1  # one live entry per connection with a keep alive
    clock.now = 1020.75
    core.tick()
    assert not silent.transport.closed
    assert watcher.received() == []

    clock.now = 1021.0
    core.tick()
    assert silent.transport.closed
    (disconnect,) = silent.received()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == 0x8D
    assert "silent" not in core.connections
    assert "silent" not in core.sessions  # expiry 0: the session ends
    (will,) = publishes(watcher.received())
    assert (will.topic, will.payload, will.qos) == ("will/silent", b"gone", 1)
    assert will.properties.content_type == "t"


def test_keep_alive_timeout_v311_closes_without_disconnect(
    clock: FakeClock, core: BrokerCore
) -> None:
    client = Client(core, MQTT_3_1_1)
    client.connect("c1", keep_alive=2)
    clock.now += 3
    core.tick()
    assert client.transport.closed
    assert client.received() == []


def test_normal_disconnect_discards_the_will(clock: FakeClock, core: BrokerCore) -> None:
    watcher = Client(core)
    watcher.connect("watcher", keep_alive=0)
    watcher.subscribe("will/#")
    leaving = Client(core)
    leaving.connect("leaving", will=Will("will/leaving", b"bye"))
    leaving.send(Disconnect())
    assert leaving.transport.closed
    assert watcher.received() == []
    leaving.protocol.connection_lost()  # the socket closing afterwards changes nothing
    assert watcher.received() == []


def test_connection_lost_publishes_the_will(core: BrokerCore) -> None:
    watcher = Client(core)
    watcher.connect("watcher", keep_alive=0)
    watcher.subscribe("will/#", qos=0)
    lost = Client(core, MQTT_3_1_1)
    lost.connect("lost", will=Will("will/lost", b"bye", qos=1))
    lost.protocol.connection_lost()
    (will,) = publishes(watcher.received())
    assert (will.topic, will.payload, will.qos) == ("will/lost", b"bye", 0)


# -- publish / subscribe flows -------------------------------------------------------------


def test_qos1_deliveries_beyond_receive_maximum_wait_for_puback(core: BrokerCore) -> None:
    sub = Client(core)
    sub.connect("sub", keep_alive=0, properties=Properties(receive_maximum=2))
    sub.subscribe("q/#", qos=1)
    pub = Client(core)
    pub.connect("pub", keep_alive=0)
    for index in range(5):
        pub.send(Publish(f"q/{index}", b"m%d" % index, qos=1, packet_id=100 + index))
    assert [p.packet_id for p in pub.received() if isinstance(p, PubAck)] == [
        100,
        101,
        102,
        103,
        104,
    ]

    first = publishes(sub.received())
    assert [(p.topic, p.qos) for p in first] == [("q/0", 1), ("q/1", 1)]
    session = core.sessions["sub"]
    assert len(session.inflight) == 2
    assert [d.message.topic for d in session.queue] == ["q/2", "q/3", "q/4"]

    sub.send(PubAck(first[0].packet_id))
    (third,) = publishes(sub.received())
    assert third.topic == "q/2"
    assert third.packet_id not in {first[1].packet_id}

    sub.send(PubAck(first[0].packet_id))  # repeated ack: nothing more goes out
    assert sub.received() == []

    sub.send(PubAck(first[1].packet_id), PubAck(third.packet_id))
    rest = publishes(sub.received())
    assert [p.topic for p in rest] == ["q/3", "q/4"]
    assert len(session.queue) == 0
    for packet in rest:
        sub.send(PubAck(packet.packet_id))
    assert session.inflight == {}
    assert sub.received() == []


def test_qos0_waits_behind_queued_qos1_to_keep_order(core: BrokerCore) -> None:
    sub = Client(core)
    sub.connect("sub", keep_alive=0, properties=Properties(receive_maximum=1))
    sub.subscribe("o/#", qos=1)
    pub = Client(core)
    pub.connect("pub", keep_alive=0)
    pub.send(
        Publish("o/1", b"", qos=1, packet_id=1),
        Publish("o/2", b"", qos=1, packet_id=2),
        Publish("o/3", b"", qos=0),
    )
    (first,) = publishes(sub.received())
    assert first.topic == "o/1"
    sub.send(PubAck(first.packet_id))
    assert [(p.topic, p.qos) for p in publishes(sub.received())] == [("o/2", 1), ("o/3", 0)]


def test_a_fan_out_burst_goes_out_over_several_turns_in_order(
    core: BrokerCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(protocol, "DELIVERY_BUDGET", 10)
    subs = [Client(core) for _ in range(5)]
    for index, sub in enumerate(subs):
        sub.connect(f"sub{index}", keep_alive=0)
        sub.subscribe("fan", qos=0)
    pub = Client(core)
    pub.connect("pub", keep_alive=0)
    burst = [Publish("fan", bytes([n])) for n in range(5)]
    pub.protocol.data_received(b"".join(encode(packet, MQTT_5) for packet in burst))
    turns = []
    while True:
        turns.append([[p.payload[0] for p in publishes(sub.received())] for sub in subs])
        if not pub.transport.later:
            break
        pub.transport.later = False
        pub.protocol.handle_input()
    # 5 deliveries per publish: the budget of 10 ends a turn after every second publish
    assert turns == [[[0, 1]] * 5, [[2, 3]] * 5, [[4]] * 5]


def test_qos2_inbound_is_routed_once_and_acknowledged(core: BrokerCore) -> None:
    sub = Client(core)
    sub.connect("sub", keep_alive=0)
    sub.subscribe("x", qos=2)
    pub = Client(core)
    pub.connect("pub", keep_alive=0)
    pub.send(Publish("x", b"once", qos=2, packet_id=7))
    assert pub.received() == [PubRec(7)]
    pub.send(Publish("x", b"once", qos=2, dup=True, packet_id=7))
    assert pub.received() == [PubRec(7)]
    (delivered,) = publishes(sub.received())
    assert (delivered.payload, delivered.qos) == (b"once", 2)
    pub.send(PubRel(7))
    assert pub.received() == [PubComp(7)]
    pub.send(PubRel(7))
    assert pub.received() == [PubComp(7, 0x92)]

    sub.send(PubRec(delivered.packet_id))
    assert sub.received() == [PubRel(delivered.packet_id)]
    sub.send(PubComp(delivered.packet_id))
    assert core.sessions["sub"].inflight == {}


def test_publish_without_subscribers_says_so(core: BrokerCore) -> None:
    pub = Client(core)
    pub.connect("pub")
    pub.send(Publish("nobody/here", b"", qos=1, packet_id=3))
    assert pub.received() == [PubAck(3, 0x10)]


def test_no_local_subscription_does_not_echo(core: BrokerCore) -> None:
    client = Client(core)
    client.connect("self", keep_alive=0)
    client.send(Subscribe(1, (Subscription("echo", 0, no_local=True),)))
    assert isinstance(client.received()[0], SubAck)
    client.send(Publish("echo", b"x"))
    assert client.received() == []


def test_unsubscribe_reports_what_existed(core: BrokerCore) -> None:
    client = Client(core)
    client.connect("c", keep_alive=0)
    client.subscribe("a")
    client.send(Unsubscribe(2, ("a", "b")))
    assert client.received() == [UnsubAck(2, (0x00, 0x11))]
    assert core.router.subscription_count() == 0


def test_retained_message_is_delivered_after_suback_with_retain_set(core: BrokerCore) -> None:
    pub = Client(core)
    pub.connect("pub", keep_alive=0)
    pub.send(Publish("r/t", b"hello", qos=1, retain=True, packet_id=1))
    assert pub.received() == [PubAck(1, 0x10)]
    sub = Client(core)
    sub.connect("sub", keep_alive=0)
    sub.send(Subscribe(5, (Subscription("r/+", 1),)))
    packets = sub.received()
    assert len(packets) == 2
    assert packets[0] == SubAck(5, (1,))
    retained = packets[1]
    assert isinstance(retained, Publish)
    assert (retained.topic, retained.payload, retained.qos, retained.retain) == (
        "r/t",
        b"hello",
        1,
        True,
    )
    # A live publish to a retained topic reaches existing subscribers with RETAIN=0.
    pub.send(Publish("r/t", b"again", qos=0, retain=True))
    (live,) = publishes(sub.received())
    assert (live.payload, live.retain) == (b"again", False)


def test_empty_retained_publish_clears_it(core: BrokerCore) -> None:
    pub = Client(core)
    pub.connect("pub")
    pub.send(Publish("r/t", b"hello", retain=True), Publish("r/t", b"", retain=True))
    sub = Client(core)
    sub.connect("sub")
    assert sub.subscribe("r/#") == []


# -- sessions ------------------------------------------------------------------------------


def test_session_takeover_keeps_the_session(core: BrokerCore) -> None:
    first = Client(core)
    persistent = Properties(session_expiry_interval=300)
    assert first.connect("dup", properties=persistent).session_present is False
    first.subscribe("x", qos=1)
    second = Client(core)
    connack = second.connect("dup", clean_start=False, properties=persistent)

    (disconnect,) = first.received()
    assert isinstance(disconnect, Disconnect)
    assert disconnect.reason_code == 0x8E
    assert first.transport.closed
    assert first.transport.writes_after_close == 0
    assert connack.session_present is True
    assert core.connections["dup"] is second.protocol
    assert set(core.sessions["dup"].subscriptions) == {"x"}

    pub = Client(core)
    pub.connect("pub")
    pub.send(Publish("x", b"after", qos=1, packet_id=1))
    (delivered,) = publishes(second.received())
    assert delivered.payload == b"after"
    assert first.received() == []


def test_takeover_with_clean_start_discards_the_session(core: BrokerCore) -> None:
    first = Client(core)
    first.connect("dup", properties=Properties(session_expiry_interval=300))
    first.subscribe("x")
    second = Client(core)
    connack = second.connect("dup", clean_start=True)
    assert connack.session_present is False
    assert first.transport.closed
    assert core.sessions["dup"].subscriptions == {}
    assert core.router.subscription_count() == 0


def test_offline_session_queues_qos1_and_delivers_on_resume(
    clock: FakeClock, core: BrokerCore
) -> None:
    sub = Client(core)
    sub.connect("sub", properties=Properties(session_expiry_interval=60))
    sub.subscribe("q", qos=1)
    sub.send(Disconnect())
    pub = Client(core)
    pub.connect("pub")
    pub.send(Publish("q", b"1", qos=1, packet_id=1), Publish("q", b"0", qos=0))
    assert pub.received() == [PubAck(1)]
    clock.now += 30
    core.tick()
    back = Client(core)
    assert back.connect("sub", clean_start=False).session_present is True
    (queued,) = publishes(back.received())
    assert (queued.payload, queued.qos) == (b"1", 1)


def test_session_expires_while_offline(clock: FakeClock, core: BrokerCore) -> None:
    sub = Client(core)
    sub.connect("sub", properties=Properties(session_expiry_interval=60))
    sub.subscribe("q")
    sub.send(Disconnect())
    clock.now += 59
    core.tick()
    assert "sub" in core.sessions
    clock.now += 1
    core.tick()
    assert "sub" not in core.sessions
    assert core.router.subscription_count() == 0


# -- what an idle connection holds ------------------------------------------------------------


def test_an_idle_attached_connection_holds_no_outbox_queue_or_connect_terms(
    core: BrokerCore,
) -> None:
    client = Client(core)
    client.connect("idle", password=b"secret", username="u")
    client.send(PingReq())
    assert client.received() == [PingResp()]
    connection = client.protocol
    session = connection.session
    assert session is not None
    assert connection.outbox is None  # made on the first delivery
    assert connection.terms is None  # the password with it
    assert session.queue == ()
    assert session.inbound_qos2 is NO_PACKET_IDS
    assert session.inflight is NO_INFLIGHT
    assert session.subscriptions is NO_SUBSCRIPTIONS
    assert connection.framer.buffered == 0


def test_the_outbox_is_made_by_the_first_delivery(core: BrokerCore) -> None:
    sub = Client(core)
    sub.connect("sub")
    sub.subscribe("t", qos=0)
    assert sub.protocol.outbox is None
    pub = Client(core)
    pub.connect("pub")
    pub.send(Publish("t", b"x"))
    assert [p.payload for p in publishes(sub.received())] == [b"x"]
    assert sub.protocol.outbox is not None


def test_a_resumed_session_delivers_its_own_connect_event_after_connack(
    core: BrokerCore,
) -> None:
    """The presence event of a reconnect is published while the connection attaches:
    a session that subscribed to it gets it behind its CONNACK."""
    first = Client(core)
    first.connect("watcher", properties=Properties(session_expiry_interval=60))
    first.subscribe("$SYS/roost/clients/+/connected", qos=0)
    first.send(Disconnect())
    back = Client(core)
    assert back.connect("watcher", clean_start=False).session_present is True
    (event,) = publishes(back.received())
    assert event.topic == "$SYS/roost/clients/watcher/connected"
