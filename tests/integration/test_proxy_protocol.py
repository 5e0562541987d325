"""A listener with ``proxy_protocol = true``: the client's address comes from the PROXY
header (what the authenticator and the logs see), MQTT starts right after it, and a
connection without a valid header is closed with one log line."""

from __future__ import annotations

import logging

import pytest

import proxyheaders
from closelog import logged_closes
from paho_helpers import wait_until
from rawmqtt import connect_bytes
from roost.attach import Credentials, Verdict

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


class PeerRecorder:
    """Allows everyone; records where each client says it comes from."""

    def __init__(self) -> None:
        self.peers: list[str] = []

    async def authenticate(self, credentials: Credentials) -> Verdict:
        self.peers.append(credentials.peer)
        return Verdict.allow()


@pytest.mark.parametrize(
    ("header", "peer"),
    [
        (proxyheaders.v2("203.0.113.7", 40000), "203.0.113.7:40000"),
        (proxyheaders.v2("2001:db8::7", 1234, "2001:db8::1"), "2001:db8::7:1234"),
        (proxyheaders.v1("198.51.100.2", 5555), "198.51.100.2:5555"),
    ],
)
def test_the_client_address_comes_from_the_header(make_broker, raw, header, peer) -> None:
    recorder = PeerRecorder()
    broker = make_broker(authenticator=recorder, proxy_protocol=True)
    client = raw(broker, 4)
    client.send(header[:5])  # the header may arrive in pieces, MQTT in the same segment
    client.send(header[5:] + connect_bytes("behind-proxy"))
    assert client.recv().name == "CONNACK"
    assert recorder.peers == [peer]


def test_the_close_is_logged_with_the_address_from_the_header(make_broker, raw, caplog) -> None:
    broker = make_broker(proxy_protocol=True)
    client = raw(broker, 4)
    with caplog.at_level(logging.INFO, logger="roost.protocol"):
        client.send(proxyheaders.v2("203.0.113.7", 40000) + connect_bytes("behind-proxy"))
        assert client.recv().name == "CONNACK"
        client.drop()
        closes = logged_closes(caplog, "behind-proxy")
    assert closes == [
        "client behind-proxy disconnected from 203.0.113.7:40000 (MQTT 3.1.1): connection lost"
    ]


def test_a_health_check_keeps_the_socket_address(make_broker, raw) -> None:
    recorder = PeerRecorder()
    broker = make_broker(authenticator=recorder, proxy_protocol=True)
    client = raw(broker, 4)
    client.send(proxyheaders.v2_local() + connect_bytes("check"))
    assert client.recv().name == "CONNACK"
    host, port = client.sock.getsockname()
    assert recorder.peers == [f"{host}:{port}"]


def test_a_connection_without_the_header_is_closed_and_logged(make_broker, raw, caplog) -> None:
    broker = make_broker(proxy_protocol=True)
    client = raw(broker, 4)
    with caplog.at_level(logging.WARNING, logger="roost.transport"):
        client.send(connect_bytes("no-header"))
        assert client.recv_or_close() is None  # closed, no CONNACK

        def transport_lines() -> list[str]:
            # only this logger's: another test's broker may still be logging in this process
            return [r.getMessage() for r in caplog.records if r.name == "roost.transport"]

        wait_until(lambda: bool(transport_lines()), what="the log line")
    host, port = client.sock.getsockname()
    assert transport_lines() == [
        f"closing the connection from {host}:{port}: no PROXY protocol header"
    ]


def test_without_the_setting_a_header_is_a_protocol_error(make_broker, raw) -> None:
    broker = make_broker()
    client = raw(broker, 4)
    client.send(proxyheaders.v2() + connect_bytes("confused"))
    assert client.recv_or_close() is None
