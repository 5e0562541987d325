"""Framer: buffering, packet boundaries, size limits and garbage input."""

from __future__ import annotations

import time
from contextlib import suppress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.codec import (
    MQTT_3_1,
    MQTT_5,
    Connect,
    Framer,
    PingReq,
    Properties,
    Publish,
    decode_packet,
    encode,
)
from roost.errors import MalformedPacket, PacketTooLarge, ProtocolError, ReasonCode

PUBLISH_V5 = Publish("a/b", b"x", 1, packet_id=7, properties=Properties(topic_alias=3))


def test_incomplete_packet_waits_for_the_rest() -> None:
    wire = encode(Publish("t", b"payload"), 4)
    framer = Framer()
    framer.feed(wire[:1])
    assert framer.next_packet() is None
    framer.feed(wire[1:-1])
    assert list(framer) == []
    framer.feed(wire[-1:])
    assert list(framer) == [Publish("t", b"payload")]
    assert framer.next_packet() is None


def test_good_packets_are_yielded_before_the_bad_one() -> None:
    framer = Framer()
    framer.feed(b"\xc0\x00\xc0\x00\xc1\x00\xc0\x00")
    packets = iter(framer)
    assert next(packets) == PingReq()
    assert next(packets) == PingReq()
    with pytest.raises(MalformedPacket):
        next(packets)


@pytest.mark.parametrize("level", [MQTT_3_1, MQTT_5])
def test_connect_sets_the_protocol_level(level: int) -> None:
    framer = Framer()
    assert framer.protocol_level == 4
    follow_up = PUBLISH_V5 if level == MQTT_5 else Publish("a/b")
    framer.feed(encode(Connect("c", level), level) + encode(follow_up, level))
    assert list(framer) == [Connect("c", level), follow_up]
    assert framer.protocol_level == level


def test_packet_too_large_is_raised_before_the_body_arrives() -> None:
    framer = Framer(max_packet_size=100)
    framer.feed(b"\x30\xff\xff\xff\x7f")  # announces 268435455 bytes, sends none
    with pytest.raises(PacketTooLarge) as caught:
        framer.next_packet()
    assert caught.value.reason_code == ReasonCode.PACKET_TOO_LARGE


def test_max_packet_size_counts_the_whole_packet_and_is_settable() -> None:
    wire = encode(Publish("t", b"x" * 95), 4)  # 2 + 2 + 1 + 95 = 100 bytes
    assert len(wire) == 100
    framer = Framer(max_packet_size=100)
    framer.feed(wire)
    assert framer.next_packet() == Publish("t", b"x" * 95)
    framer.max_packet_size = 99
    framer.feed(wire[:2])
    with pytest.raises(PacketTooLarge):
        framer.next_packet()


def test_remaining_length_longer_than_four_bytes_is_malformed() -> None:
    framer = Framer()
    framer.feed(b"\x30\xff\xff\xff\xff\x01")
    with pytest.raises(MalformedPacket):
        framer.next_packet()


def test_many_packets_per_feed_and_many_small_feeds_are_cheap() -> None:
    wire = encode(Publish("sensors/1", b"21.5", 1, packet_id=1), 4)
    framer = Framer()
    started = time.perf_counter()
    framer.feed(wire * 20_000)
    assert sum(1 for _ in framer) == 20_000
    big = Publish("t", bytes(2_000_000))
    wire = encode(big, 4)
    decoded = []
    for offset in range(0, len(wire), 1000):
        framer.feed(wire[offset : offset + 1000])
        decoded.extend(framer)
    assert decoded == [big]
    assert time.perf_counter() - started < 5


def test_decode_packet_accepts_a_memoryview() -> None:
    wire = encode(PUBLISH_V5, MQTT_5)
    assert decode_packet(wire[0], memoryview(wire)[2:], MQTT_5) == PUBLISH_V5


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([4, 5]), st.integers(1, 50))
def test_random_bytes_raise_only_protocol_errors(data: bytes, level: int, chunk: int) -> None:
    framer = Framer()
    framer.protocol_level = level
    with suppress(ProtocolError):
        for offset in range(0, len(data), chunk):
            framer.feed(data[offset : offset + chunk])
            for _ in framer:
                pass
