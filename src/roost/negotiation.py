"""CONNECT negotiation as a pure function: what a CONNECT asks for, what the settings allow,
and the terms the connection then runs under (and the CONNACK properties that tell the
client). Refusals raise :class:`~roost.errors.ConnectRefused` with the CONNACK reason code.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from roost.codec import MQTT_5, NO_PROPERTIES, Connect, Properties, Will
from roost.config import Settings
from roost.errors import ConnectRefused, ReasonCode
from roost.session import NEVER_EXPIRES
from roost.topics import validate_topic_name

MAX_PACKET_SIZE = 268_435_460  # the largest packet MQTT can express
STRICT_CLIENT_ID = re.compile(r"[0-9a-zA-Z]{1,23}")  # [MQTT-3.1.3-5]
ASSIGNED_ID_PREFIX = "roost-"


@dataclass(frozen=True, slots=True)
class ConnectTerms:
    """What one connection runs under once its CONNECT is accepted."""

    client_id: str
    protocol_level: int
    clean_start: bool
    keep_alive: int  # seconds; 0: no keep alive
    session_expiry: int  # the granted Session Expiry Interval
    will: Will | None
    username: str | None
    password: bytes | None
    send_window: int  # outbound QoS 1/2 messages unacknowledged at once
    max_outgoing_packet: int  # the client's Maximum Packet Size
    topic_alias_maximum: int  # aliases the client accepts from the server
    problem_information: bool  # MQTT 5 Request Problem Information
    connack_properties: Properties  # sent with a successful CONNACK (MQTT 5)
    auth_method: str | None = None  # MQTT 5 enhanced authentication (the attach runs it)
    auth_data: bytes | None = None  # the client's first Authentication Data


def negotiate(packet: Connect, settings: Settings) -> ConnectTerms:
    """The terms of a well-formed CONNECT under ``settings`` (raises ConnectRefused)."""
    level = packet.protocol_level
    v5 = level == MQTT_5
    props = packet.properties
    if props.authentication_data is not None and props.authentication_method is None:
        raise ConnectRefused(
            "Authentication Data without Authentication Method", ReasonCode.PROTOCOL_ERROR
        )  # [MQTT 3.1.2.11.10]
    client_id, assigned = _client_id(packet, settings)
    keep_alive, server_keep_alive = _keep_alive(packet.keep_alive, v5, settings)
    _check_will(packet.will, settings)
    if v5:
        expiry = props.session_expiry_interval or 0
    else:
        expiry = 0 if packet.clean_start else NEVER_EXPIRES
    granted_expiry = min(expiry, settings.max_session_expiry)
    connack_properties = NO_PROPERTIES
    if v5:
        response_information = None
        if props.request_response_information and settings.response_information:
            response_information = settings.response_information + client_id
        connack_properties = Properties(
            session_expiry_interval=granted_expiry if granted_expiry != expiry else None,
            receive_maximum=settings.receive_maximum,
            maximum_qos=settings.maximum_qos if settings.maximum_qos < 2 else None,
            retain_available=int(settings.retain_available),
            maximum_packet_size=settings.max_packet_size,
            assigned_client_identifier=assigned,
            topic_alias_maximum=settings.topic_alias_maximum,
            wildcard_subscription_available=int(settings.wildcard_subscription_available),
            subscription_identifier_available=int(settings.subscription_identifier_available),
            shared_subscription_available=int(settings.shared_subscription_available),
            server_keep_alive=server_keep_alive,
            response_information=response_information,
        )
    return ConnectTerms(
        client_id=client_id,
        protocol_level=level,
        clean_start=packet.clean_start,
        keep_alive=keep_alive,
        session_expiry=granted_expiry,
        will=packet.will,
        username=packet.username,
        password=packet.password,
        send_window=min(props.receive_maximum or 65535, settings.max_inflight),
        max_outgoing_packet=props.maximum_packet_size or MAX_PACKET_SIZE,
        topic_alias_maximum=(props.topic_alias_maximum or 0) if v5 else 0,
        problem_information=props.request_problem_information != 0,
        connack_properties=connack_properties,
        auth_method=props.authentication_method,
        auth_data=props.authentication_data,
    )


def _client_id(packet: Connect, settings: Settings) -> tuple[str, str | None]:
    """(client id, the identifier assigned by the server or None)."""
    client_id = packet.client_id
    if not client_id:
        if not settings.allow_empty_client_id or not (
            packet.protocol_level == MQTT_5 or packet.clean_start
        ):
            raise ConnectRefused(
                "empty client id not allowed", ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
            )  # [MQTT-3.1.3-8]
        client_id = ASSIGNED_ID_PREFIX + secrets.token_hex(8)
        return client_id, client_id
    if settings.strict_client_id and not STRICT_CLIENT_ID.fullmatch(client_id):
        raise ConnectRefused(
            f"client id {client_id!r} is not 1-23 characters of 0-9a-zA-Z",
            ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
        )
    return client_id, None


def _keep_alive(asked: int, v5: bool, settings: Settings) -> tuple[int, int | None]:
    """(keep alive in force, Server Keep Alive to announce or None) [MQTT-3.2.2-21].

    A 5.0 client asking for more than ``max_keep_alive`` (or for none, when there is a
    maximum) is told the maximum; a 3.1.1 client asking for more is refused, as Mosquitto
    does, since 3.1.1 cannot tell it.
    """
    maximum = settings.max_keep_alive
    if asked <= maximum and (asked or maximum == 65535):
        return asked, None
    if not v5:
        if asked > maximum:
            raise ConnectRefused(
                f"keep alive {asked} s above the maximum", ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
            )
        return asked, None
    if maximum < 65535:
        return maximum, maximum
    return asked, None


def _check_will(will: Will | None, settings: Settings) -> None:
    if will is None:
        return
    validate_topic_name(will.topic, settings.max_topic_length, settings.max_topic_levels)
    if will.qos > settings.maximum_qos:
        raise ConnectRefused("will QoS not supported", ReasonCode.QOS_NOT_SUPPORTED)
    if will.retain and not settings.retain_available:
        raise ConnectRefused("retain not supported", ReasonCode.RETAIN_NOT_SUPPORTED)
