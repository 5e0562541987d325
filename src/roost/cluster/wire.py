"""What nodes send each other through their inbox streams, as bytes. Pure: no I/O.

One stream entry carries a *batch* (field ``b``): the records one node had for another in
one loop turn, in order; and when it was sent (field ``t``, wall-clock seconds), so that
the time it waits in the stream counts toward the expiry of its messages (nodes share the
wall clock, as they do for what they store). A record is one of

- ``PUBLISH``: a message for the receiving node's local subscribers, with the shared
  filters the sender chose that node for (each message reaches one member of a shared
  group cluster-wide); ``FRAME`` is the same with the message as a QoS 0 MQTT PUBLISH
  packet the sender had at hand (the one it arrived in), which the receiver decodes and
  then sends as it is to its subscribers of that MQTT version, instead of encoding it;
- ``KICK``: a client id now owned by another node under a newer epoch: close its
  connection here (session taken over, [MQTT-3.1.4-3]) and let the session go;
- ``RELEASED``: the answer to a KICK, sent once the session is durable in Redis;
- ``PREPARED`` / ``SETTLED``: a node holds a new pending transaction / settled one (to
  every node, so that each knows where to send a decision and how to answer a late one);
- ``DECIDE``: a producer's decision, for the node holding the transaction;
- ``CHECK``: a check-back request, for one member of the group on the receiving node;
- ``GROUPS``: a message for some shared groups only, one member of each on the receiving
  node (not for its plain subscriptions): one that waited in a dead node's inbox, dealt
  again to its groups by the adopter of that node.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

from roost.codec import MQTT_3_1_1, MQTT_5, NO_PROPERTIES, PacketType, Publish, decode_packet
from roost.codec.primitives import (
    decode_utf8,
    encode_string,
    encode_u8,
    encode_u32,
    encode_varint,
    read_properties,
    read_string,
    read_u8,
    read_u32,
)
from roost.errors import MalformedPacket
from roost.message import Message
from roost.transactions import Decision, Settled

T = TypeVar("T")

_HEAD = struct.Struct("!BBH")  # record kind, flags, origin length
_FLAGS_ORIGIN = struct.Struct("!BH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_NO_SHARED: frozenset[str] = frozenset()
_FRAME_HEAD = struct.Struct("!BI")  # fixed-header length, packet length
_MQTT5 = 0x80  # in a FRAME record's flags: the packet is MQTT 5's
_QOS0_PUBLISH = PacketType.PUBLISH << 4  # its first byte: no DUP, QoS 0, retain aside
_SHORT = 129  # an MQTT packet of up to this many bytes has a 2-byte fixed header
_NONE_SHARED = b"\0\0"  # the count closing a record for no shared filter
ORIGIN_HEADS = 4096
_ORIGIN_HEADS: dict[str, tuple[bytes, bytes, bytes, bytes]] = {}

PUBLISH = 1
KICK = 2
RELEASED = 3
PREPARED = 4
SETTLED = 5
DECIDE = 6
CHECK = 7
GROUPS = 8
FRAME = 9

_OUTCOMES = tuple(Settled)
_DECISIONS = tuple(Decision)

_QOS_MASK = 0x03
_RETAIN = 0x04


class Relayed(NamedTuple):
    """A message received from another node and the shared filters it is to serve. A
    message with none to serve comes as a bare :class:`Message` (the common case: it
    saves an object per relayed message)."""

    message: Message
    shared: frozenset[str]


@dataclass(frozen=True, slots=True)
class Kick:
    client_id: str
    epoch: int
    reply_to: str  # the node that took the client over


@dataclass(frozen=True, slots=True)
class Released:
    client_id: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Prepared:
    transaction_id: str
    node: str  # the node holding it


@dataclass(frozen=True, slots=True)
class TransactionSettled:
    transaction_id: str
    outcome: Settled


@dataclass(frozen=True, slots=True)
class Decide:
    transaction_id: str
    decision: Decision


@dataclass(frozen=True, slots=True)
class Check:
    request: Message


@dataclass(frozen=True, slots=True)
class ForGroups:
    """A message for the shared groups ``groups`` only."""

    message: Message
    groups: frozenset[str]


Record = (
    Message | Relayed | Kick | Released | Prepared | TransactionSettled | Decide | Check | ForGroups
)


def encode_publish(
    message: Message, shared: tuple[str, ...], now: float, kind: int = PUBLISH
) -> bytes:
    """A PUBLISH (or CHECK, or GROUPS) record; a message expiry interval is sent as what remains at
    ``now``. The hot path of relaying: fixed-size fields packed by struct, not field by field;
    a FRAME record for a PUBLISH whose packet is at hand."""
    if kind == PUBLISH:
        encoded = message.encoded_frame()
        if encoded is not None:
            frame, mqtt5 = encoded
            size = len(frame)
            publisher = message.origin
            heads = _ORIGIN_HEADS.get(publisher) or _frame_record_heads(publisher)
            parts = [
                heads[message.retain + 2 * mqtt5],
                _FRAME_HEAD.pack(_fixed_header_length(frame) if size > _SHORT else 2, size),
                frame,
            ]
            if not shared:
                parts.append(_NONE_SHARED)
                return b"".join(parts)
            return _with_shared(parts, shared)
    flags = message.qos | (_RETAIN if message.retain else 0)
    origin = message.origin.encode()
    properties = message.properties_bytes(now)
    topic = message.topic_bytes
    payload = message.payload
    parts = [
        _HEAD.pack(kind, flags, len(origin)),
        origin,
        _U16.pack(len(topic)),
        topic,
        _U32.pack(len(payload)),
        payload,
        encode_varint(len(properties)) if properties else b"\0",
        properties,
    ]
    return _with_shared(parts, shared)


def _frame_record_heads(origin: str) -> tuple[bytes, bytes, bytes, bytes]:
    """The kind, flags and origin that open a FRAME record of ``origin``: the same for
    every message a client publishes, so kept (for up to ORIGIN_HEADS publishers at a
    time); one for each of not retained / retained, MQTT 3.1.1 / 5 (a FRAME is QoS 0)."""
    if len(_ORIGIN_HEADS) >= ORIGIN_HEADS:
        _ORIGIN_HEADS.clear()
    raw = origin.encode()
    heads = _ORIGIN_HEADS[origin] = (
        _HEAD.pack(FRAME, 0, len(raw)) + raw,
        _HEAD.pack(FRAME, _RETAIN, len(raw)) + raw,
        _HEAD.pack(FRAME, _MQTT5, len(raw)) + raw,
        _HEAD.pack(FRAME, _MQTT5 | _RETAIN, len(raw)) + raw,
    )
    return heads


def _with_shared(parts: list[bytes], shared: tuple[str, ...]) -> bytes:
    parts.append(_U16.pack(len(shared)))
    parts.extend(encode_string(topic_filter) for topic_filter in shared)
    return b"".join(parts)


def _fixed_header_length(packet: bytes) -> int:
    """The bytes of an MQTT packet's fixed header: its first byte and the remaining
    length (a varint of up to 4 bytes)."""
    end = 1
    while packet[end] & 0x80:
        end += 1
    return end + 1


def encode_kick(kick: Kick) -> bytes:
    return b"".join(
        (
            encode_u8(KICK),
            encode_string(kick.client_id),
            encode_u32(kick.epoch),
            encode_string(kick.reply_to),
        )
    )


def encode_released(released: Released) -> bytes:
    return encode_u8(RELEASED) + encode_string(released.client_id) + encode_u32(released.epoch)


def encode_prepared(prepared: Prepared) -> bytes:
    return (
        encode_u8(PREPARED) + encode_string(prepared.transaction_id) + encode_string(prepared.node)
    )


def encode_settled(settled: TransactionSettled) -> bytes:
    outcome = _OUTCOMES.index(settled.outcome)
    return encode_u8(SETTLED) + encode_string(settled.transaction_id) + encode_u8(outcome)


def encode_decide(decide: Decide) -> bytes:
    decision = _DECISIONS.index(decide.decision)
    return encode_u8(DECIDE) + encode_string(decide.transaction_id) + encode_u8(decision)


BATCH = b"b"  # field of an inbox entry: the batch
SENT = b"t"  # field of an inbox entry: when it was sent, wall clock


def inbox_entry(batch: bytes, wall_now: float) -> dict[bytes, bytes]:
    """The fields of the inbox entry carrying ``batch``, sent at ``wall_now``."""
    return {BATCH: batch, SENT: repr(wall_now).encode()}


def decode_entry(fields: dict[bytes, bytes], now: float, wall_now: float) -> Iterator[Record]:
    """The records of an inbox entry read at ``now`` (broker clock), ``wall_now`` (wall
    clock): its messages' expiry runs from when the entry was sent."""
    if BATCH not in fields:
        raise MalformedPacket("an inbox entry without a batch")
    sent = fields.get(SENT)
    waited = 0.0
    if sent is not None:
        try:
            waited = max(0.0, wall_now - float(sent))
        except ValueError:
            raise MalformedPacket("an inbox entry with a bad time") from None
    return decode_batch(fields[BATCH], now - waited)


def decode_batch(data: bytes, now: float) -> Iterator[Record]:
    """The records of one batch, in order; raises MalformedPacket on bad bytes."""
    pos = 0
    end = len(data)
    while pos < end:
        kind = data[pos]
        pos += 1
        if kind in (FRAME, PUBLISH):
            read = _read_frame if kind == FRAME else _read_publish
            message, shared, pos = read(data, pos, now)
            yield Relayed(message, shared) if shared else message
        elif kind == KICK:
            client_id, pos = read_string(data, pos, "client id")
            epoch, pos = read_u32(data, pos, "epoch")
            reply_to, pos = read_string(data, pos, "node id")
            yield Kick(client_id, epoch, reply_to)
        elif kind == RELEASED:
            client_id, pos = read_string(data, pos, "client id")
            epoch, pos = read_u32(data, pos, "epoch")
            yield Released(client_id, epoch)
        elif kind == PREPARED:
            transaction_id, pos = read_string(data, pos, "transaction id")
            node, pos = read_string(data, pos, "node id")
            yield Prepared(transaction_id, node)
        elif kind == SETTLED:
            transaction_id, pos = read_string(data, pos, "transaction id")
            outcome, pos = read_u8(data, pos, "outcome")
            yield TransactionSettled(transaction_id, _pick(_OUTCOMES, outcome))
        elif kind == DECIDE:
            transaction_id, pos = read_string(data, pos, "transaction id")
            decision, pos = read_u8(data, pos, "decision")
            yield Decide(transaction_id, _pick(_DECISIONS, decision))
        elif kind == CHECK:
            message, _, pos = _read_publish(data, pos, now)
            yield Check(message)
        elif kind == GROUPS:
            message, shared, pos = _read_publish(data, pos, now)
            yield ForGroups(message, shared)
        else:
            raise MalformedPacket(f"unknown record kind {kind}")


def _pick(choices: tuple[T, ...], index: int) -> T:
    if index >= len(choices):
        raise MalformedPacket(f"unknown value {index} in a record")
    return choices[index]


def _read_publish(data: bytes, pos: int, now: float) -> tuple[Message, frozenset[str], int]:
    """The rest of a PUBLISH record (after its kind). The hot path of relaying: sizes
    read by struct, the slices checked once at the end (a slice past the end is short,
    so the next read fails or the final position is past the end)."""
    try:
        flags, size = _FLAGS_ORIGIN.unpack_from(data, pos)
        pos += 3
        origin = data[pos : pos + size].decode()
        pos += size
        (size,) = _U16.unpack_from(data, pos)
        pos += 2
        topic = data[pos : pos + size].decode()
        pos += size
        (size,) = _U32.unpack_from(data, pos)
        pos += 4
        payload = data[pos : pos + size]
        pos += size
        if data[pos]:
            properties, pos = read_properties(data, pos, PacketType.PUBLISH)
        else:
            properties, pos = NO_PROPERTIES, pos + 1
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise MalformedPacket(f"a relayed message is truncated or not UTF-8: {exc}") from None
    shared, pos = _read_shared(data, pos)
    message = Message(
        topic, payload, flags & _QOS_MASK, bool(flags & _RETAIN), properties, origin, now
    )
    return message, shared, pos


def _read_frame(data: bytes, pos: int, now: float) -> tuple[Message, frozenset[str], int]:
    """The rest of a FRAME record: the message read from its packet, which it keeps as
    its encoding for subscribers of that MQTT version. The hot path of receiving: a
    packet without properties is read here (topic, payload), one with properties by the
    packet decoder."""
    try:
        flags, size = _FLAGS_ORIGIN.unpack_from(data, pos)
        pos += 3
        origin = data[pos : pos + size].decode()
        pos += size
        head, size = _FRAME_HEAD.unpack_from(data, pos)
        pos += 5
        frame = data[pos : pos + size]
        pos += size
        no_shared = not (data[pos] or data[pos + 1])  # the count of shared filters
    except (struct.error, IndexError, UnicodeDecodeError) as exc:
        raise MalformedPacket(f"a relayed packet is truncated or not UTF-8: {exc}") from None
    if no_shared:
        shared, pos = _NO_SHARED, pos + 2
    else:
        shared, pos = _read_shared(data, pos)
    retain = bool(flags & _RETAIN)
    size = len(frame)
    if head + 2 > size or frame[0] != _QOS0_PUBLISH | retain:
        raise MalformedPacket("a relayed packet that is not the QoS 0 PUBLISH of its message")
    level = MQTT_5 if flags & _MQTT5 else MQTT_3_1_1
    topic_end = head + 2 + (frame[head] << 8 | frame[head + 1])
    if level == MQTT_3_1_1:
        payload_start = topic_end
    elif topic_end < size and not frame[topic_end]:
        payload_start = topic_end + 1  # MQTT 5, no properties
    else:
        return _read_frame_with_properties(frame, head, origin, now), shared, pos
    if payload_start > size:
        raise MalformedPacket("a relayed packet whose topic overruns it")
    topic_bytes = frame[head + 2 : topic_end]
    message = Message.from_packet(
        decode_utf8(topic_bytes, "topic name"),
        topic_bytes,
        frame[payload_start:],
        retain,
        origin,
        frame,
        level == MQTT_5,
    )
    return message, shared, pos


def _read_frame_with_properties(frame: bytes, head: int, origin: str, now: float) -> Message:
    """A FRAME record's MQTT 5 packet with properties, read by the packet decoder."""
    packet = decode_packet(frame[0], frame[head:], MQTT_5)
    if not isinstance(packet, Publish):  # the caller saw a PUBLISH's first byte
        raise MalformedPacket("a relayed packet that is not a PUBLISH")
    return Message(
        packet.topic,
        packet.payload,
        0,
        packet.retain,
        packet.properties,
        origin,
        now,
        frame,
        MQTT_5,
    )


def _read_shared(data: bytes, pos: int) -> tuple[frozenset[str], int]:
    """The shared filters closing a PUBLISH or FRAME record (its count is read even
    past the end of ``data``, by a slice cut short before it: then that fails)."""
    try:
        count = data[pos] << 8 | data[pos + 1]
    except IndexError:
        raise MalformedPacket("a relayed message is truncated") from None
    pos += 2
    if not count:
        return _NO_SHARED, pos
    filters: list[str] = []
    for _ in range(count):
        topic_filter, pos = read_string(data, pos, "shared filter")
        filters.append(topic_filter)
    return frozenset(filters), pos
