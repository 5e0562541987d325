"""An application message as the broker keeps it: stored once, referenced by every delivery.

The encoded forms a subscriber needs are cached on the message itself, so a message sent to
many subscribers is encoded once per wire variant instead of once per subscriber.
"""

from __future__ import annotations

from dataclasses import replace

from roost.codec import MQTT_5, NO_PROPERTIES, Properties, encode_properties, encode_publish


class Message:
    """One published application message (immutable after creation)."""

    __slots__ = (
        "_encoded",
        "_properties_bytes",
        "expires_at",
        "origin",
        "payload",
        "properties",
        "qos",
        "retain",
        "store_id",
        "stored_deliveries",
        "topic",
        "topic_bytes",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties = NO_PROPERTIES,
        origin: str = "",
        now: float = 0.0,
        frame: bytes = b"",
        frame_level: int = 0,
    ) -> None:
        """``frame``: the QoS 0 PUBLISH this message arrived in at ``frame_level``, reused
        as its encoding for subscribers of the same wire format."""
        self.topic = topic
        self.topic_bytes = topic.encode()
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.origin = origin  # client id of the publisher, for no-local [MQTT-3.8.3-3]
        if properties.topic_alias is not None:
            properties = _without_alias(properties)
        self.properties = properties
        expiry = properties.message_expiry_interval
        self.expires_at: float | None = None if expiry is None else now + expiry
        self.store_id = 0  # row id once a store has saved it
        self.stored_deliveries = 0  # deliveries the store holds for it
        self._properties_bytes: bytes | None = None
        # QoS 0 PUBLISH bytes by _encoding_key (an int: no tuple made per delivery)
        self._encoded: dict[int, bytes] | None = None
        if frame:
            self._encoded = {_encoding_key(frame_level == MQTT_5, retain): frame}

    @classmethod
    def from_packet(
        cls,
        topic: str,
        topic_bytes: bytes,
        payload: bytes,
        retain: bool,
        origin: str,
        frame: bytes,
        mqtt5: bool,
    ) -> Message:
        """A QoS 0 message without properties, read from its PUBLISH ``frame`` (kept as
        its encoding). The hot path of relaying: it has no alias or expiry for
        ``__init__`` to look at, and its topic comes in both forms."""
        message = cls.__new__(cls)
        message.topic = topic
        message.topic_bytes = topic_bytes
        message.payload = payload
        message.qos = 0
        message.retain = retain
        message.origin = origin
        message.properties = NO_PROPERTIES
        message.expires_at = None
        message.store_id = 0
        message.stored_deliveries = 0
        message._properties_bytes = None
        message._encoded = {_encoding_key(mqtt5, retain): frame}
        return message

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def properties_bytes(self, now: float) -> bytes:
        """The MQTT 5 property section (without length) as sent at ``now``.

        Encoded once, unless the message expires: then the interval sent is what remains
        [MQTT-3.3.2-6], so it is encoded per send.
        """
        if self.expires_at is not None:
            remaining = max(0, int(self.expires_at - now + 0.999))
            return encode_properties(replace(self.properties, message_expiry_interval=remaining))
        if self._properties_bytes is None:
            self._properties_bytes = encode_properties(self.properties)
        return self._properties_bytes

    def encoded_frame(self) -> tuple[bytes, bool] | None:
        """A QoS 0 PUBLISH of this message with its own retain flag, already encoded (the
        one it arrived in, or one made for a subscriber), and whether it is MQTT 5's; None
        if there is none, or the message expires (its interval is sent as what remains).
        A message with properties has them only in an MQTT 5 packet."""
        cache = self._encoded
        if cache is None or self.expires_at is not None:
            return None
        plain = self.properties is NO_PROPERTIES
        for key, data in cache.items():
            mqtt5 = bool(key >> 1)
            if bool(key & 1) == self.retain and (mqtt5 or plain):
                return data, mqtt5
        return None

    def encode_qos0(self, protocol_level: int, retain: bool, now: float) -> bytes:
        """The QoS 0 PUBLISH bytes for subscribers without per-delivery properties.

        Cached per (protocol level, retain flag) unless the message carries an expiry.
        """
        if self.expires_at is not None:
            return self._encode_qos0(protocol_level, retain, now)
        key = (protocol_level == MQTT_5) << 1 | retain  # 3.1 and 3.1.1 encode PUBLISH alike
        cache = self._encoded
        if cache is None:
            cache = self._encoded = {}
        else:
            data = cache.get(key)
            if data is not None:
                return data
        data = cache[key] = self._encode_qos0(protocol_level, retain, now)
        return data

    def _encode_qos0(self, protocol_level: int, retain: bool, now: float) -> bytes:
        properties = self.properties_bytes(now) if protocol_level == MQTT_5 else None
        return encode_publish(
            self.topic_bytes, self.payload, 0, retain, False, 0, properties, protocol_level
        )


def _encoding_key(mqtt5: bool, retain: bool) -> int:
    """The key of a cached QoS 0 PUBLISH: MQTT 5 in bit 1, retain in bit 0 (computed
    inline the same way by ``encode_qos0``, on the path of every delivery)."""
    return mqtt5 << 1 | retain


def _without_alias(properties: Properties) -> Properties:
    """Topic aliases belong to one connection and are never forwarded [MQTT-3.3.2-7]."""
    return replace(properties, topic_alias=None)
