"""Helpers of the ACL tests: a broker with an ACL file, and paho clients that connect under
a user name and record the reason code of each PUBACK / PUBREC they get."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho_helpers import V5, Clients, Conn, code_of, make_client, start, wait_until


def broker_with_acl(make_broker: Any, tmp_path: Path, text: str, **settings: Any) -> Any:
    """A broker whose ``acl_file`` holds ``text``."""
    path = tmp_path / "acl.conf"
    path.write_text(text)
    return make_broker(acl_file=str(path), **settings)


class AckCodes:
    """The reason code of each acknowledged publish, by message id."""

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.lock = threading.Lock()

    def on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self.lock:
            self.codes[mid] = code_of(rc)


def connect_as(
    clients: Clients,
    broker: Any,
    username: str | None,
    client_id: str,
    version: int = V5,
    **options: Any,
) -> Conn:
    """Connect a tracked paho client under ``username`` (None: anonymous). ``options``:
    ``clean``, ``session_expiry``, ``will`` (topic, payload, qos, retain)."""
    client, collector = make_client(client_id, version, options.get("clean"))
    if username is not None:
        client.username_pw_set(username)
    will = options.get("will")
    if will is not None:
        client.will_set(*will)
    acks = AckCodes()
    client.on_publish = acks.on_publish
    client.user_data_set(acks)
    start(
        client,
        collector,
        broker,
        client_id,
        version,
        options.get("clean", True),
        options.get("session_expiry"),
    )
    assert code_of(collector.connacks[-1][0]) == 0, "CONNACK refused"
    client.reconnect_delay_set(min_delay=60, max_delay=120)
    conn = Conn(client, collector)
    clients.all.append(conn)
    return conn


def publish_code(
    conn: Conn,
    topic: str,
    payload: bytes,
    qos: int = 1,
    retain: bool = False,
    user_properties: list[tuple[str, str]] | None = None,
) -> int:
    """Publish with QoS 1 or 2 and return the reason code of its PUBACK / PUBREC (always
    0 for MQTT 3.1.1, which has none)."""
    properties = None
    if user_properties is not None:
        properties = Properties(PacketTypes.PUBLISH)
        properties.UserProperty = user_properties
    info = conn.client.publish(topic, payload, qos, retain, properties=properties)
    acks: AckCodes = conn.client.user_data_get()
    wait_until(lambda: info.mid in acks.codes, what=f"acknowledgement of {payload!r}")
    return acks.codes[info.mid]
