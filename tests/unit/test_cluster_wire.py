"""Inbox entries between nodes: the time an entry waited in the stream counts toward the
expiry of its messages; bad entries are refused."""

from __future__ import annotations

import pytest

from roost.cluster.wire import Relayed, decode_entry, encode_publish, inbox_entry
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
