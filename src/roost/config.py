"""Broker settings: one frozen dataclass, filled from defaults, a TOML file, ROOST_* env vars
and command-line flags (in that order of precedence, flags last)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of a single Roost node. Field names are the TOML keys; the env var is
    ``ROOST_<NAME>`` and the flag ``--<name-with-dashes>``."""

    host: str = "127.0.0.1"
    port: int = 1883
    log_level: str = "info"
    # Limits
    max_connections: int = 100_000
    max_packet_size: int = 1_048_576
    receive_maximum: int = 1024  # inbound QoS>0 PUBLISHes a client may have unacknowledged
    max_inflight: int = 1024  # outbound QoS>0 messages unacknowledged per client
    max_queued_messages: int = 1000  # per session, beyond inflight
    max_topic_length: int = 65535
    max_topic_levels: int = 128
    max_keep_alive: int = 65535  # a client asking for more gets Server Keep Alive
    topic_alias_maximum: int = 64  # aliases a client may use towards the broker
    max_session_expiry: int = 0xFFFFFFFF  # seconds; 0xFFFFFFFF = never expire
    # Client identifiers
    strict_client_id: bool = False  # only 1-23 chars of 0-9a-zA-Z [MQTT-3.1.3-5]
    allow_empty_client_id: bool = True
    # Features
    retain_available: bool = True
    wildcard_subscription_available: bool = True
    shared_subscription_available: bool = True
    subscription_identifier_available: bool = True
    maximum_qos: int = 2
    # Storage
    store: str = "memory"
    data_dir: str = "./data"
