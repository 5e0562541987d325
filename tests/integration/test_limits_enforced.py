"""Limits the broker keeps whatever a client sends: Receive Maximum counts QoS 1 messages
waiting for the store, reason strings fit the client, a SUBSCRIBE is applied whole or not
at all, dropped messages are counted and logged; and Response Information on request."""

from __future__ import annotations

import logging
import struct

from paho_helpers import wait_until
from rawmqtt import frame, utf8


def test_qos1_messages_awaiting_their_commit_count_toward_receive_maximum(make_broker, raw) -> None:
    broker = make_broker(receive_maximum=5)  # SQLite, durability full: PUBACK after commit
    keeper, _ = raw.connected(broker, "keeper", 5, clean=False, session_expiry=3600)
    keeper.subscribe(1, [("rm/t", 1)])  # each message is stored for it before its PUBACK
    client = raw(broker, 5)
    client.connect("eager")
    burst = b"".join(
        frame(0x32, utf8("rm/t") + struct.pack("!H", n) + b"\x00" + b"p") for n in range(1, 11)
    )
    client.send(burst)  # ten QoS 1 PUBLISHes in one read, before any commit
    packets = client.wait_closed()
    assert packets[-1].name == "DISCONNECT"
    assert packets[-1].reason_code == 0x93


def test_reason_strings_are_cut_to_fit(make_broker, raw) -> None:
    broker = make_broker()
    client = raw(broker, 5)
    client.connect("long-reason")
    topic = "$tx/" + "r" * 65_530  # refused; the reason names the topic
    client.publish(topic, b"id", qos=1, packet_id=3)
    puback = client.expect("PUBACK")
    assert puback.reason_code == 0x87
    assert len(puback.props["ReasonString"].encode()) <= 65_535
    client.send(b"\xc0\x00")
    client.expect("PINGRESP")  # the connection goes on


def test_reason_strings_are_left_out_past_the_clients_maximum_packet_size(make_broker, raw) -> None:
    broker = make_broker()
    client = raw(broker, 5)
    client.connect("small-packets", props=[("MaximumPacketSize", 64)])
    client.publish("$tx/" + "r" * 100, b"id", qos=1, packet_id=4)
    puback = client.expect("PUBACK")
    assert puback.reason_code == 0x87
    assert "ReasonString" not in puback.props


def test_a_subscribe_with_a_protocol_error_applies_none_of_its_filters(make_broker, raw) -> None:
    broker = make_broker()
    client = raw(broker, 5)
    client.connect("whole", clean=False, session_expiry=3600)
    body = struct.pack("!H", 1) + b"\x00"
    body += utf8("first/ok") + b"\x01"
    body += utf8("$share/g/second") + b"\x05"  # no local on a shared subscription
    client.send(frame(0x82, body))
    packets = client.wait_closed()
    assert [p.name for p in packets] == ["DISCONNECT"]
    assert packets[0].reason_code == 0x82
    core = broker.broker.core
    assert core.sessions["whole"].subscriptions == {}
    assert core.router.subscription_count() == 0


def test_messages_dropped_for_a_full_queue_are_counted_and_logged(
    make_broker, raw, clients, caplog
) -> None:
    broker = make_broker(max_queued_messages=10)
    away, _ = raw.connected(broker, "away", 5, clean=False, session_expiry=3600)
    away.subscribe(1, [("drops/t", 1)])
    away.disconnect()
    away.drop()
    core = broker.broker.core
    wait_until(lambda: not core.is_online("away"), what="away offline")
    publisher = clients.connect(broker, "drop-publisher")
    with caplog.at_level(logging.WARNING, logger="roost.core"):
        for n in range(30):
            publisher.client.publish("drops/t", b"%d" % n, qos=1).wait_for_publish(10)
        wait_until(lambda: core.dropped_messages == 20, what="20 drops counted")
        wait_until(
            lambda: any("away: 20" in r.getMessage() for r in caplog.records),
            what="a log line naming the client and the count",
        )


def test_response_information_is_offered_on_request(make_broker, raw) -> None:
    broker = make_broker(response_information="replies/")
    _, asked = raw.connected(broker, "asker", 5, props=[("RequestResponseInformation", 1)])
    assert asked.props["ResponseInformation"] == "replies/asker"
    _, silent = raw.connected(broker, "silent", 5)
    assert "ResponseInformation" not in silent.props
    plain = make_broker(response_information="")
    _, none = raw.connected(plain, "asker2", 5, props=[("RequestResponseInformation", 1)])
    assert "ResponseInformation" not in none.props
