"""How the stores write things down and read them back.

Times are stored as wall-clock seconds and rebased to the broker's monotonic clock on load
(:class:`WallClock`): the wall clock keeps counting while the broker is down, and it is the
one clock the nodes of a cluster share. Properties are stored as their MQTT 5 property
section. The Redis store keeps each record as one compact binary value (a struct header,
then the variable-length fields); its encoders and decoders are here too.
"""

from __future__ import annotations

import struct
import time

from roost.codec import NO_PROPERTIES, PacketType, Properties, Will
from roost.codec.primitives import WILL_PROPERTIES, encode_property_section, read_properties
from roost.message import Message
from roost.session import Delivery, OutboundState, Session, SubscriptionOptions
from roost.transactions import HalfMessage

EMPTY_PROPERTY_SECTION = b"\x00"  # Property Length 0


class WallClock:
    """Converts times between the broker clock and the wall clock they are stored in."""

    __slots__ = ("offset",)

    def __init__(self) -> None:
        self.offset = 0.0  # wall clock minus broker clock

    def fix(self, now: float) -> None:
        """Take the offset at broker time ``now``."""
        self.offset = time.time() - now

    def to_clock(self, wall: float | None) -> float | None:
        return None if wall is None else wall - self.offset

    def to_wall(self, clock: float | None) -> float | None:
        return None if clock is None else clock + self.offset


def properties_blob(properties: Properties, kind: int) -> bytes:
    if properties is NO_PROPERTIES:
        return EMPTY_PROPERTY_SECTION
    return encode_property_section(properties, kind)


def properties_from(blob: bytes, kind: int) -> Properties:
    return read_properties(blob, 0, kind)[0]


def stored_message(
    clock: WallClock,
    topic: str,
    payload: bytes,
    qos: int,
    retain: int,
    properties: bytes,
    origin: str,
    expires_at: float | None,
) -> Message:
    """A message read back: ``properties`` is its property section, ``expires_at`` a
    wall-clock time."""
    message = Message(
        topic, payload, qos, bool(retain), properties_from(properties, PacketType.PUBLISH), origin
    )
    message.expires_at = clock.to_clock(expires_at)
    return message


def restore_delivery(
    session: Session, delivery: Delivery, state: OutboundState, packet_id: int
) -> None:
    """Put a stored delivery back into ``session``, deliveries being read in ``seq`` order:
    in flight under ``packet_id`` if it was sent, else at the end of the queue. Sequence
    numbers and packet identifiers continue after the last one read."""
    session.next_seq = delivery.seq + 1
    if state:
        session.restore_inflight(packet_id, delivery, state)
        session.next_packet_id = packet_id % 65535 + 1
    else:
        session.restore_queued(delivery)


ANONYMOUS_OWNER = "!"
USER_OWNER = "="  # followed by the user name


def owner_text(session: Session) -> str | None:
    """Who owns ``session``, as stored: None if unknown, else anonymous or a user name."""
    if not session.identified:
        return None
    username = session.username
    return ANONYMOUS_OWNER if username is None else USER_OWNER + username


def restore_owner(session: Session, text: str | None) -> None:
    """Set the owner of a session read back from :func:`owner_text` (None: unknown)."""
    if text is not None:
        session.set_owner(text[1:] if text.startswith(USER_OWNER) else None)


# -- binary records (Redis) ------------------------------------------------------------------

# Flags of a message record.
_RETAIN = 1
_EXPIRES = 2
# qos, flags, expires at (wall clock), then the lengths of topic, origin and payload; then
# those three and the PUBLISH property section.
_MESSAGE = struct.Struct(">BBdHHI")
# qos, retain, topic and payload lengths; then those two and the will property section.
_WILL = struct.Struct(">BBHI")
# qos, flags, retain handling, subscription identifier (0: none, which is not a valid one).
_OPTIONS = struct.Struct(">BBBI")
_NO_LOCAL = 1
_RETAIN_AS_PUBLISHED = 2
# state, packet id, qos, retain, count of subscription identifiers; then the identifiers
# (4 bytes each) and the message record.
_DELIVERY = struct.Struct(">BHBBH")
# checks, whether a check is due, when (wall clock), group length; then the group and the
# message record.
_HALF = struct.Struct(">IBdH")


def encode_message(message: Message, clock: WallClock) -> bytes:
    topic = message.topic_bytes
    origin = message.origin.encode()
    expires_at = clock.to_wall(message.expires_at)
    flags = (_RETAIN if message.retain else 0) | (0 if expires_at is None else _EXPIRES)
    header = _MESSAGE.pack(
        message.qos, flags, expires_at or 0.0, len(topic), len(origin), len(message.payload)
    )
    properties = properties_blob(message.properties, PacketType.PUBLISH)
    return b"".join((header, topic, origin, message.payload, properties))


def decode_message(data: bytes, pos: int, clock: WallClock) -> Message:
    """The message record at ``pos`` (the last thing in its value)."""
    qos, flags, expires_at, topic_len, origin_len, payload_len = _MESSAGE.unpack_from(data, pos)
    pos += _MESSAGE.size
    topic = data[pos : pos + topic_len].decode()
    pos += topic_len
    origin = data[pos : pos + origin_len].decode()
    pos += origin_len
    payload = data[pos : pos + payload_len]
    pos += payload_len
    return stored_message(
        clock,
        topic,
        payload,
        qos,
        flags & _RETAIN,
        data[pos:],
        origin,
        expires_at if flags & _EXPIRES else None,
    )


def encode_will(will: Will) -> bytes:
    topic = will.topic.encode()
    header = _WILL.pack(will.qos, int(will.retain), len(topic), len(will.payload))
    properties = properties_blob(will.properties, WILL_PROPERTIES)
    return b"".join((header, topic, will.payload, properties))


def decode_will(data: bytes) -> Will:
    qos, retain, topic_len, payload_len = _WILL.unpack_from(data)
    pos = _WILL.size
    topic = data[pos : pos + topic_len].decode()
    pos += topic_len
    payload = data[pos : pos + payload_len]
    properties = properties_from(data[pos + payload_len :], WILL_PROPERTIES)
    return Will(topic, payload, qos, bool(retain), properties)


def encode_options(options: SubscriptionOptions) -> bytes:
    flags = (_NO_LOCAL if options.no_local else 0) | (
        _RETAIN_AS_PUBLISHED if options.retain_as_published else 0
    )
    return _OPTIONS.pack(options.qos, flags, options.retain_handling, options.identifier or 0)


def decode_options(data: bytes) -> SubscriptionOptions:
    qos, flags, retain_handling, identifier = _OPTIONS.unpack(data)
    return SubscriptionOptions(
        qos,
        bool(flags & _NO_LOCAL),
        bool(flags & _RETAIN_AS_PUBLISHED),
        retain_handling,
        identifier or None,
    )


def encode_delivery(
    delivery: Delivery, state: OutboundState, packet_id: int, clock: WallClock
) -> bytes:
    ids = delivery.subscription_ids
    header = _DELIVERY.pack(state, packet_id, delivery.qos, int(delivery.retain), len(ids))
    return b"".join(
        (header, struct.pack(f">{len(ids)}I", *ids), encode_message(delivery.message, clock))
    )


def decode_delivery(data: bytes, seq: int, clock: WallClock) -> tuple[Delivery, OutboundState, int]:
    """The delivery stored under ``seq``, with its state and packet identifier."""
    state, packet_id, qos, retain, id_count = _DELIVERY.unpack_from(data)
    pos = _DELIVERY.size
    ids = struct.unpack_from(f">{id_count}I", data, pos)
    message = decode_message(data, pos + 4 * id_count, clock)
    delivery = Delivery(message, qos, bool(retain), ids)
    delivery.seq = seq
    return delivery, OutboundState(state), packet_id


def encode_half(half: HalfMessage, clock: WallClock) -> bytes:
    group = half.group.encode()
    next_check = clock.to_wall(half.next_check)
    header = _HALF.pack(half.checks, next_check is not None, next_check or 0.0, len(group))
    return b"".join((header, group, encode_message(half.message, clock)))


def decode_half(transaction_id: str, data: bytes, clock: WallClock) -> HalfMessage:
    checks, due, next_check, group_len = _HALF.unpack_from(data)
    pos = _HALF.size
    group = data[pos : pos + group_len].decode()
    message = decode_message(data, pos + group_len, clock)
    half = HalfMessage(transaction_id, group, message, clock.to_clock(next_check) if due else None)
    half.checks = checks
    return half
