"""The attach step between CONNECT and CONNACK, with a deliberately slow authenticator:
input behind CONNECT keeps its order, a client that leaves while attaching leaves nothing,
racing attaches for one client id end with one owner, refusals get the right code."""

from __future__ import annotations

import asyncio
import struct

from paho_helpers import wait_until
from rawmqtt import frame, utf8
from roost.attach import Credentials, Verdict
from roost.errors import ReasonCode

SLOW = 0.2  # seconds the test authenticator takes


class SlowAuthenticator:
    """Allows everyone except user "mallory", after SLOW seconds; records who asked."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def authenticate(self, credentials: Credentials) -> Verdict:
        self.asked.append(credentials.client_id)
        await asyncio.sleep(SLOW)  # the slowness is the subject here, not a wait for an event
        if credentials.username == "mallory":
            return Verdict.deny(ReasonCode.NOT_AUTHORIZED)
        return Verdict.allow()


def connect_with_user(client_id: str, username: str, version: int) -> bytes:
    body = utf8("MQTT") + bytes([version, 0x82]) + struct.pack("!H", 60)
    if version == 5:
        body += b"\x00"
    return frame(0x10, body + utf8(client_id) + utf8(username))


def test_packets_behind_connect_are_handled_after_connack_in_order(make_broker, raw) -> None:
    auth = SlowAuthenticator()
    broker = make_broker(authenticator=auth)
    client = raw(broker, 4)
    client.send_connect("pipelined")
    # SUBSCRIBE, then a PUBLISH to that subscription, then PINGREQ: all before CONNACK.
    client.send(frame(0x82, struct.pack("!H", 1) + utf8("p/t") + b"\x01"))
    client.publish("p/t", b"one", qos=1, packet_id=7)
    client.publish("p/t", b"two", qos=0)
    client.send(b"\xc0\x00")
    packets = [client.recv() for _ in range(6)]
    assert [p.name for p in packets[:2]] == ["CONNACK", "SUBACK"]
    assert [p.payload for p in packets if p.name == "PUBLISH"] == [b"one", b"two"]
    assert sorted(p.name for p in packets[2:]) == ["PINGRESP", "PUBACK", "PUBLISH", "PUBLISH"]
    assert auth.asked == ["pipelined"]


def test_refused_client_gets_the_reason_and_nothing_behind_connect_is_handled(
    make_broker, raw, clients
) -> None:
    broker = make_broker(authenticator=SlowAuthenticator())
    watcher = clients.connect(broker, "watcher")
    watcher.sub("#")
    for version, expected in ((5, 0x87), (4, 5)):
        client = raw(broker, version)
        client.send(connect_with_user(f"bad{version}", "mallory", version))
        client.publish("leak", b"must not be routed", qos=0)
        (connack,) = client.wait_closed()
        assert connack.name == "CONNACK"
        assert connack.reason_code == expected
    core = broker.broker.core
    assert "bad5" not in core.sessions and "bad4" not in core.sessions
    watcher.client.publish("marker", b"m")
    watcher.wait_for_payload(b"m")
    assert watcher.topics() == ["marker"]


def test_client_gone_while_attaching_leaves_nothing_behind(make_broker, raw) -> None:
    auth = SlowAuthenticator()
    broker = make_broker(authenticator=auth)
    core = broker.broker.core
    client = raw(broker, 5)
    client.send_connect("leaver", clean=False, session_expiry=3600)
    wait_until(lambda: auth.asked == ["leaver"], what="the attach to start")
    client.drop()
    wait_until(lambda: not core.open_connections, what="the connection to be forgotten")
    # The authenticator answers after the client left: no session, no connection remains.
    wait_until(lambda: not broker.broker.attacher.attaching, what="the attach to end")
    assert core.sessions == {}
    assert core.connections == {}
    assert core.open_connections == set()


def test_racing_attaches_for_one_client_id_end_with_one_owner(make_broker, raw) -> None:
    auth = SlowAuthenticator()
    broker = make_broker(authenticator=auth)
    core = broker.broker.core
    first, second = raw(broker, 5), raw(broker, 5)
    first.send_connect("contested")
    wait_until(lambda: len(auth.asked) == 1, what="the first attach to start")
    second.send_connect("contested")
    first_packets = [first.expect("CONNACK")]
    second.expect("CONNACK")
    # The one attached later takes over the earlier one, which gets DISCONNECT 0x8E.
    first_packets += first.wait_closed()
    assert [p.name for p in first_packets] == ["CONNACK", "DISCONNECT"]
    assert first_packets[1].reason_code == 0x8E
    assert len(core.connections) == 1 and "contested" in core.connections
    second.send(b"\xc0\x00")
    assert second.expect("PINGRESP")


def test_a_long_pipeline_behind_connect_is_delivered_whole_and_in_order(
    make_broker, raw, clients
) -> None:
    broker = make_broker(authenticator=SlowAuthenticator())
    watcher = clients.connect(broker, "watcher")
    watcher.sub("bulk/#")
    client = raw(broker, 4)
    client.send_connect("bulk-sender")
    payloads = [b"%04d" % n + b"x" * 1000 for n in range(200)]  # 200 KB: past the limit
    for payload in payloads:
        client.publish("bulk/t", payload)
    assert client.expect("CONNACK").reason_code == 0
    watcher.wait_for_messages(len(payloads))
    assert [m.payload for m in watcher.messages] == payloads
