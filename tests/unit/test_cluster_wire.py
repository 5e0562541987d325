"""Inbox entries between nodes: the time an entry waited in the stream counts toward the
expiry of its messages; bad entries are refused."""

from __future__ import annotations

import pytest

from roost.cluster.wire import (
    CHECK,
    GROUPS,
    Check,
    ForGroups,
    Relayed,
    decode_batch,
    decode_entry,
    encode_publish,
    inbox_entry,
)
from roost.codec.properties import Properties
from roost.errors import MalformedPacket
from roost.message import Message


def relayed_after(waited: float, expiry: int, now: float = 50.0) -> Relayed:
    message = Message("t", b"x", 1, False, Properties(message_expiry_interval=expiry), now=0.0)
    fields = inbox_entry(encode_publish(message, (), 0.0), wall_now=1000.0)
    (record,) = decode_entry(fields, now, wall_now=1000.0 + waited)
    assert isinstance(record, Relayed)
    return record


def test_a_message_expires_counting_from_when_its_entry_was_sent() -> None:
    assert relayed_after(3.0, 10).message.expires_at == 47.0 + 10
    assert relayed_after(3.0, 10).message.expired(57.0)


def test_an_entry_from_a_clock_ahead_of_the_readers_does_not_extend_the_expiry() -> None:
    assert relayed_after(-5.0, 10).message.expires_at == 50.0 + 10


@pytest.mark.parametrize(
    "fields", [{b"t": b"1000.0"}, {b"b": b"", b"t": b"soon"}], ids=["no batch", "bad time"]
)
def test_a_bad_entry_is_refused(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(MalformedPacket):
        list(decode_entry(fields, 0.0, 0.0))


RICH = Message(
    "plant/7/temperature",
    b"\x00\xff payload",
    2,
    True,
    Properties(content_type="text/plain", user_properties=(("k", "v"), ("k", "w"))),
    origin="sensor-7",
)


def test_a_relayed_message_arrives_with_every_field() -> None:
    (record,) = decode_batch(encode_publish(RICH, ("$share/g/plant/#",), 0.0), 0.0)
    assert isinstance(record, Relayed)
    message = record.message
    assert (message.topic, message.payload, message.qos, message.retain, message.origin) == (
        RICH.topic,
        RICH.payload,
        RICH.qos,
        RICH.retain,
        RICH.origin,
    )
    assert message.properties == RICH.properties
    assert record.shared == {"$share/g/plant/#"}


def test_records_of_one_batch_come_in_order_with_their_kinds() -> None:
    plain = Message("a", b"1", 0, False)
    batch = b"".join(
        [
            encode_publish(plain, (), 0.0),
            encode_publish(RICH, ("$share/g/#",), 0.0, GROUPS),
            encode_publish(RICH, (), 0.0, CHECK),
        ]
    )
    first, groups, check = decode_batch(batch, 0.0)
    assert isinstance(first, Relayed) and first.message.topic == "a" and first.shared == set()
    assert isinstance(groups, ForGroups) and groups.groups == {"$share/g/#"}
    assert isinstance(check, Check) and check.request.properties == RICH.properties


def test_every_truncation_of_a_record_is_refused_as_malformed() -> None:
    record = encode_publish(RICH, ("$share/g/plant/#",), 0.0)
    for end in range(1, len(record)):
        with pytest.raises(MalformedPacket):
            list(decode_batch(record[:end], 0.0))


def test_a_topic_that_is_not_utf8_is_refused_as_malformed() -> None:
    record = encode_publish(Message("ab", b"", 0, False), (), 0.0)
    broken = record.replace(b"ab", b"\xff\xfe", 1)
    with pytest.raises(MalformedPacket):
        list(decode_batch(broken, 0.0))
