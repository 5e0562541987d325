"""Message and byte rates per client, against a real broker whose clock the test moves on:
a client over its rate is read at that rate (its publishes reach a subscriber only as fast
as its bucket refills), one that stays over it is disconnected with 0x96 (MQTT 5) or
closed (3.1.1), one within it is untouched, and without the settings nothing is limited."""

from __future__ import annotations

import logging

import pytest

from adminhttp import scrape, value
from brokerthread import ManualClock, RunningBroker
from paho_helpers import V5, V311, Clients, Conn
from rawmqtt import LEVELS, RawClient, RawFactory, publish_bytes

TOPIC = "rate/t"
MESSAGE_RATE_TOO_HIGH = 0x96


def subscriber(raw: RawFactory, broker: RunningBroker) -> RawClient:
    sub, _ = raw.connected(broker, "sub", 5)
    sub.subscribe(1, [(TOPIC, 0)])
    return sub


def flood(raw: RawFactory, broker: RunningBroker, count: int, size: int, level: int) -> RawClient:
    """A client that sends ``count`` QoS 0 PUBLISHes (payload ``size`` bytes, numbered at
    the start) in one write."""
    pub, _ = raw.connected(broker, "flood", level)
    payloads = [str(n).encode().ljust(size, b".") for n in range(count)]
    pub.send(b"".join(publish_bytes(TOPIC.encode(), p, level=level) for p in payloads))
    return pub


def received(sub: RawClient, count: int) -> list[int]:
    """The numbers of the next ``count`` messages, checking that nothing else was sent
    before the subscriber's PINGRESP."""
    numbers = [int(sub.expect("PUBLISH").payload.rstrip(b".")) for _ in range(count)]
    assert sub.until_pingresp() == [], f"more than {count} messages"
    return numbers


@pytest.mark.parametrize(
    ("limit", "size"),
    [({"client_message_rate": 10}, 1), ({"client_byte_rate": 1000}, 100)],
    ids=["messages", "bytes"],
)
def test_a_client_over_its_rate_is_read_at_that_rate(
    make_broker, raw, clock: ManualClock, limit: dict[str, int], size: int
) -> None:
    # 10 messages a second, either way: 10 a second or 1000 bytes of 100-byte payloads
    broker = make_broker(clock=clock, rate_limit_grace=0, **limit)
    sub = subscriber(raw, broker)
    flood(raw, broker, 60, size, 5)
    # The bucket holds one second's worth; the message that goes beyond it is handled,
    # then nothing more until it is paid back.
    assert received(sub, 11) == list(range(11))
    broker.advance(1.0)
    assert received(sub, 10) == list(range(11, 21))
    broker.advance(0.5)
    assert received(sub, 5) == list(range(21, 26))
    broker.advance(0.05)  # the debt of the last one is not paid yet
    assert sub.until_pingresp() == []
    core = broker.broker.core
    assert core.traffic.throttled == 3  # at the start, after 1 s, after 1.5 s
    assert core.traffic.rate_disconnects == 0


@LEVELS
def test_a_client_that_stays_over_its_message_rate_is_disconnected(
    make_broker, raw, clock: ManualClock, caplog, level: int
) -> None:
    broker = make_broker(clock=clock, client_message_rate=10, rate_limit_grace=2, http_port=0)
    sub = subscriber(raw, broker)
    with caplog.at_level(logging.WARNING, logger="roost.protocol"):
        pub = flood(raw, broker, 60, 1, level)
        assert len(received(sub, 11)) == 11
        broker.advance(1.0)  # over its rate for 1 s: resumed, and over again at once
        assert len(received(sub, 10)) == 10
        broker.advance(1.0)  # for 2 s: disconnected
        packets = pub.wait_closed()
    if level == 5:
        assert [(p.name, p.reason_code) for p in packets] == [("DISCONNECT", MESSAGE_RATE_TOO_HIGH)]
        assert packets[0].props["ReasonString"] == "message rate too high"
    else:
        assert packets == []  # MQTT 3.1.1 has no DISCONNECT from the server
    assert sub.until_pingresp() == []  # nothing more of its backlog was handled
    assert any("over its message or byte rate" in r.getMessage() for r in caplog.records)
    samples = scrape(broker)
    assert value(samples, "roost_rate_limited_total", action="paused") == 2
    assert value(samples, "roost_rate_limited_total", action="disconnected") == 1
    broker.wait_offline("flood")


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_a_paho_client_that_stays_over_its_byte_rate_is_disconnected(
    make_broker, clients: Clients, clock: ManualClock, version: int
) -> None:
    broker = make_broker(clock=clock, client_byte_rate=1000, rate_limit_grace=2)
    sub = clients.connect(broker, "sub", V5)
    sub.sub(TOPIC)
    pub = clients.connect(broker, "bulky", version)
    for n in range(40):
        pub.client.publish(TOPIC, b"%03d" % n + b"." * 97)
    sub.wait_for_messages(11)
    broker.advance(1.0)
    sub.wait_for_messages(21)
    broker.advance(1.0)
    assert pub.disconnected.wait(10)
    if version == V5:
        assert [int(rc.value) for rc in pub.disconnects] == [MESSAGE_RATE_TOO_HIGH]
    assert [m.payload[:3] for m in sub.messages] == [b"%03d" % n for n in range(21)]


@pytest.mark.parametrize("version", [V311, V5], ids=["v311", "v5"])
def test_a_client_within_its_rates_is_untouched(
    make_broker, clients: Clients, clock: ManualClock, version: int
) -> None:
    broker = make_broker(
        clock=clock, client_message_rate=10, client_byte_rate=1000, rate_limit_grace=1
    )
    sub = clients.connect(broker, "sub", V5)
    sub.sub(TOPIC, 1)
    pub = clients.connect(broker, "steady", version)
    for second in range(5):  # a full bucket's worth each second, QoS 1: each acknowledged
        for n in range(10):
            pub.pub(TOPIC, b"%d-%d" % (second, n) + b"." * 90, qos=1)
        broker.advance(1.0)
    sub.wait_for_messages(50)
    core = broker.broker.core
    assert core.traffic.throttled == 0
    assert len(core.limits.throttles) == 0
    assert pub.client.is_connected() and not pub.disconnects


def test_without_rate_settings_a_flood_is_read_at_once(make_broker, raw, clock) -> None:
    broker = make_broker(clock=clock)  # the clock never moves: only the limits would wait
    sub = subscriber(raw, broker)
    flood(raw, broker, 500, 100, 5)
    assert received(sub, 500) == list(range(500))
    assert broker.broker.core.traffic.throttled == 0


def test_a_paused_client_still_gets_its_deliveries(make_broker, clients: Clients, clock) -> None:
    """Only reading stops: what the client subscribed to keeps reaching it."""
    broker = make_broker(clock=clock, client_message_rate=1, rate_limit_grace=0)
    both = clients.connect(broker, "both", V5)
    both.sub("other/t")
    for n in range(5):
        both.client.publish(TOPIC, b"%d" % n)
    other: Conn = clients.connect(broker, "other", V5)
    other.pub("other/t", b"while paused", qos=1)
    assert both.wait_for_payload(b"while paused")
