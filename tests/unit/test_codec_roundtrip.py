"""Property-based round trips through encode() and the Framer, plus mutation fuzzing."""

from __future__ import annotations

from contextlib import suppress
from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from roost.codec import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    NO_PROPERTIES,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
    Framer,
    Packet,
    PacketType,
    PingReq,
    PingResp,
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
    encode_properties,
    encode_publish,
)
from roost.codec.primitives import (
    BINARY,
    PROPERTY_SPECS,
    STRING,
    STRING_PAIR,
    WILL_PROPERTIES,
    PropertySpec,
)
from roost.codec.properties import Properties
from roost.errors import ProtocolError

LEVELS = st.sampled_from([MQTT_3_1, MQTT_3_1_1, MQTT_5])
FAST = settings(max_examples=200, deadline=None)

TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
BLOB = st.binary(max_size=40)
PACKET_ID = st.integers(1, 0xFFFF)
BYTE = st.integers(0, 0xFF)


def _value(spec: PropertySpec) -> st.SearchStrategy[Any]:
    if spec.wire is STRING:
        return TEXT
    if spec.wire is BINARY:
        return BLOB
    if spec.wire is STRING_PAIR:
        return st.tuples(TEXT, TEXT)
    assert spec.high is not None
    return st.integers(spec.low, spec.high)


def properties(kind: int, level: int) -> st.SearchStrategy[Properties]:
    """Valid properties for packet type ``kind``; none below MQTT 5."""
    if level < MQTT_5:
        return st.just(NO_PROPERTIES)
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for spec in PROPERTY_SPECS:
        if kind not in spec.allowed:
            continue
        if isinstance(getattr(NO_PROPERTIES, spec.name), tuple):
            most = 3 if kind in spec.repeatable else 1
            fields[spec.name] = st.lists(_value(spec), max_size=most).map(tuple)
        else:
            fields[spec.name] = st.none() | _value(spec)
    return st.fixed_dictionaries(fields).map(lambda values: Properties(**values))


def _connect(level: int) -> st.SearchStrategy[Connect]:
    will = st.builds(
        Will, TEXT, BLOB, st.integers(0, 2), st.booleans(), properties(WILL_PROPERTIES, level)
    )
    connects = st.builds(
        Connect,
        client_id=TEXT,
        protocol_level=st.just(level),
        clean_start=st.booleans(),
        keep_alive=st.integers(0, 0xFFFF),
        username=st.none() | TEXT,
        password=st.none() | BLOB,
        will=st.none() | will,
        properties=properties(PacketType.CONNECT, level),
    )
    if level < MQTT_5:  # [MQTT-3.1.2-22]
        return connects.filter(lambda c: c.username is not None or c.password is None)
    return connects


def _publish(level: int) -> st.SearchStrategy[Publish]:
    def with_qos(qos: int) -> st.SearchStrategy[Publish]:
        return st.builds(
            Publish,
            TEXT,
            BLOB,
            st.just(qos),
            st.booleans(),
            st.booleans() if qos else st.just(False),
            PACKET_ID if qos else st.just(0),
            properties(PacketType.PUBLISH, level),
        )

    return st.integers(0, 2).flatmap(with_qos)


def _subscription(level: int) -> st.SearchStrategy[Subscription]:
    if level < MQTT_5:
        return st.builds(Subscription, TEXT, st.integers(0, 2))
    return st.builds(
        Subscription, TEXT, st.integers(0, 2), st.booleans(), st.booleans(), st.integers(0, 2)
    )


def packets(level: int) -> st.SearchStrategy[Packet]:
    """Every packet type valid at ``level``, v5-only fields at their defaults below 5."""
    v5 = level >= MQTT_5
    reason = BYTE if v5 else st.just(0)

    def props(kind: int) -> st.SearchStrategy[Properties]:
        return properties(kind, level)

    def tuples(elements: st.SearchStrategy[Any], min_size: int) -> st.SearchStrategy[Any]:
        return st.lists(elements, min_size=min_size, max_size=4).map(tuple)

    def ack(cls: type[PubAck | PubRec | PubRel | PubComp]) -> st.SearchStrategy[Packet]:
        return st.builds(cls, PACKET_ID, reason, props(cls.packet_type))

    strategies: list[st.SearchStrategy[Any]] = [
        _connect(level),
        st.builds(
            ConnAck,
            st.booleans() if level > MQTT_3_1 else st.just(False),
            BYTE if v5 else st.integers(0, 5),
            props(PacketType.CONNACK),
        ),
        _publish(level),
        st.sampled_from([PubAck, PubRec, PubRel, PubComp]).flatmap(ack),
        st.builds(
            Subscribe,
            PACKET_ID,
            tuples(_subscription(level), 1),
            props(PacketType.SUBSCRIBE),
        ),
        st.builds(
            SubAck,
            PACKET_ID,
            tuples(BYTE if v5 else st.sampled_from([0, 1, 2, 0x80]), 1),
            props(PacketType.SUBACK),
        ),
        st.builds(Unsubscribe, PACKET_ID, tuples(TEXT, 1), props(PacketType.UNSUBSCRIBE)),
        st.builds(
            UnsubAck,
            PACKET_ID,
            tuples(BYTE, 0) if v5 else st.just(()),
            props(PacketType.UNSUBACK),
        ),
        st.sampled_from([PingReq(), PingResp()]),
        st.builds(Disconnect, reason, props(PacketType.DISCONNECT)),
    ]
    if v5:
        strategies.append(st.builds(Auth, reason, props(PacketType.AUTH)))
    return st.one_of(strategies)


def level_and_packets(max_size: int = 5) -> st.SearchStrategy[tuple[int, list[Packet]]]:
    return LEVELS.flatmap(
        lambda level: st.tuples(
            st.just(level), st.lists(packets(level), min_size=1, max_size=max_size)
        )
    )


def decode_all(level: int, chunks: list[bytes]) -> list[Packet]:
    framer = Framer()
    framer.protocol_level = level
    decoded: list[Packet] = []
    for chunk in chunks:
        framer.feed(chunk)
        decoded.extend(framer)
    return decoded


@FAST
@given(level_and_packets(max_size=1))
def test_every_packet_round_trips(case: tuple[int, list[Packet]]) -> None:
    level, [packet] = case
    assert decode_all(level, [encode(packet, level)]) == [packet]


@FAST
@given(level_and_packets(), st.data())
def test_random_chunking_yields_the_same_packets(
    case: tuple[int, list[Packet]], data: st.DataObject
) -> None:
    level, sent = case
    wire = b"".join(encode(packet, level) for packet in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=8)))
    bounds = [0, *cuts, len(wire)]
    chunks = [wire[a:b] for a, b in pairwise(bounds)]
    assert decode_all(level, chunks) == sent


@FAST
@given(_publish(MQTT_5), st.sampled_from([MQTT_3_1_1, MQTT_5]))
def test_encode_publish_matches_encode(packet: Publish, level: int) -> None:
    props = encode_properties(packet.properties) if level >= MQTT_5 else None
    fast = encode_publish(
        packet.topic.encode(),
        packet.payload,
        packet.qos,
        packet.retain,
        packet.dup,
        packet.packet_id,
        props,
        level,
    )
    assert fast == encode(packet, level)  # level 4 ignores the properties


@FAST
@given(level_and_packets(), st.data())
def test_mutated_packets_raise_only_protocol_errors(
    case: tuple[int, list[Packet]], data: st.DataObject
) -> None:
    level, sent = case
    wire = bytearray(b"".join(encode(packet, level) for packet in sent))
    for _ in range(data.draw(st.integers(1, 4))):
        index = data.draw(st.integers(0, len(wire) - 1))
        action = data.draw(st.sampled_from(["replace", "delete", "insert"]))
        if action == "replace":
            wire[index] = data.draw(BYTE)
        elif action == "delete" and len(wire) > 1:
            del wire[index]
        else:
            wire.insert(index, data.draw(BYTE))
    with suppress(ProtocolError):
        decode_all(level, [bytes(wire)])
