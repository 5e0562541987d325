"""MQTT 3.1 / 3.1.1 / 5.0 packet codec: packet dataclasses, encoder, decoder and framer."""

from roost.codec.decode import decode_packet
from roost.codec.encode import encode, encode_publish
from roost.codec.framer import Framer
from roost.codec.packets import (
    MQTT_3_1,
    MQTT_3_1_1,
    MQTT_5,
    Auth,
    ConnAck,
    Connect,
    Disconnect,
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
)
from roost.codec.primitives import encode_properties
from roost.codec.properties import NO_PROPERTIES, Properties

__all__ = [
    "MQTT_3_1",
    "MQTT_3_1_1",
    "MQTT_5",
    "NO_PROPERTIES",
    "Auth",
    "ConnAck",
    "Connect",
    "Disconnect",
    "Framer",
    "Packet",
    "PacketType",
    "PingReq",
    "PingResp",
    "Properties",
    "PubAck",
    "PubComp",
    "PubRec",
    "PubRel",
    "Publish",
    "SubAck",
    "Subscribe",
    "Subscription",
    "UnsubAck",
    "Unsubscribe",
    "Will",
    "decode_packet",
    "encode",
    "encode_properties",
    "encode_publish",
]
