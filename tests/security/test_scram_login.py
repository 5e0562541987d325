"""MQTT 5 enhanced authentication with SCRAM-SHA-256 on a real broker, driven by a raw
client and the RFC-written SCRAM client of tests/scramclient.py: CONNECT, AUTH, CONNACK;
re-authentication while connected; every refusal with its reason code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from brokerthread import ManualClock
from rawmqtt import RawClient, RawFactory
from roost.protocol import CONNECT_TIMEOUT
from roost.security.passwords import make_entry, write_text
from scramclient import ScramClient

METHOD = "SCRAM-SHA-256"
CONTINUE, REAUTHENTICATE = 0x18, 0x19


@pytest.fixture
def password_path(tmp_path: Path) -> str:
    path = str(tmp_path / "passwords")
    entries = [make_entry("alice", "wonderland"), make_entry("bob", "builder")]
    write_text(path, "".join(entry.line() + "\n" for entry in entries))
    return path


@pytest.fixture
def secured(make_broker: Any, password_path: str) -> Any:
    return make_broker(password_file=password_path)


def auth_props(data: bytes, method: str = METHOD) -> list[tuple[str, Any]]:
    return [("AuthenticationMethod", method), ("AuthenticationData", data)]


def scram_connect(
    raw: RawFactory, broker: Any, user: str, password: str, client_id: str = "scram"
) -> tuple[RawClient, ScramClient, Any]:
    """Run the CONNECT exchange; returns (client, its SCRAM state, the broker's last packet:
    CONNACK, or the refusal)."""
    client = raw(broker, 5)
    scram = ScramClient(user, password, "cl1entn0nce")
    challenge = client.connect(client_id, props=auth_props(scram.first()))
    assert challenge is not None
    if challenge.name != "AUTH":
        return client, scram, challenge
    assert challenge.reason_code == CONTINUE
    assert challenge.props["AuthenticationMethod"] == METHOD
    client.auth(CONTINUE, auth_props(scram.final(challenge.props["AuthenticationData"])))
    return client, scram, client.recv()


def test_scram_login_then_the_connection_works_as_that_user(secured: Any, raw: RawFactory) -> None:
    client, scram, connack = scram_connect(raw, secured, "alice", "wonderland")
    assert connack.name == "CONNACK" and connack.reason_code == 0, connack
    assert connack.props["AuthenticationMethod"] == METHOD
    assert scram.verify(connack.props["AuthenticationData"])  # the server knew alice's keys
    assert secured.broker.core.connections["scram"].username == "alice"
    client.subscribe(1, [("s/#", 1)])
    client.publish("s/1", b"hi", qos=0)
    assert client.expect("PUBLISH").payload == b"hi"


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("nobody", "wonderland")])
def test_wrong_password_or_unknown_user_is_refused_0x87(
    secured: Any, raw: RawFactory, user: str, password: str
) -> None:
    client, _, connack = scram_connect(raw, secured, user, password)
    assert connack.name == "CONNACK" and connack.reason_code == 0x87, connack
    assert client.wait_closed() == []
    assert "scram" not in secured.broker.core.sessions


def test_unknown_method_is_refused_0x8c(secured: Any, raw: RawFactory) -> None:
    client = raw(secured, 5)
    connack = client.connect("m", props=auth_props(b"n,,n=alice,r=x", "SCRAM-SHA-1"))
    assert connack is not None and connack.name == "CONNACK" and connack.reason_code == 0x8C
    assert client.wait_closed() == []


def test_authentication_data_without_method_is_a_protocol_error(
    secured: Any, raw: RawFactory
) -> None:
    client = raw(secured, 5)
    connack = client.connect("m", props=[("AuthenticationData", b"x")])
    assert connack is not None and connack.reason_code == 0x82


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ("pingreq", 0x82),  # nothing but AUTH before CONNACK [MQTT-3.1.2-30]
        ("auth-success", 0x82),  # only the server ends an exchange
        ("other-method", 0x8C),
    ],
)
def test_anything_but_auth_continue_during_the_exchange_is_refused(
    secured: Any, raw: RawFactory, answer: str, code: int
) -> None:
    client = raw(secured, 5)
    scram = ScramClient("alice", "wonderland", "n0nce")
    challenge = client.connect("x", props=auth_props(scram.first()))
    assert challenge is not None and challenge.name == "AUTH"
    if answer == "pingreq":
        client.send(b"\xc0\x00")
    elif answer == "auth-success":
        client.auth(0x00, auth_props(b"c=biws"))
    else:
        client.auth(CONTINUE, auth_props(b"c=biws", "PLAIN"))
    (connack,) = client.wait_closed()
    assert connack.name == "CONNACK" and connack.reason_code == code


def test_connect_timeout_applies_while_waiting_for_auth(
    make_broker: Any, password_path: str, raw: RawFactory, clock: ManualClock
) -> None:
    broker = make_broker(clock=clock, password_file=password_path)
    client = raw(broker, 5)
    scram = ScramClient("alice", "wonderland", "n0nce")
    challenge = client.connect("x", props=auth_props(scram.first()))
    assert challenge is not None and challenge.name == "AUTH"
    broker.advance(CONNECT_TIMEOUT - 1)
    assert broker.broker.core.open_connections  # still waiting for the client's AUTH
    broker.advance(1)
    assert client.wait_closed() == []
    assert not broker.broker.core.open_connections


def test_backoff_applies_to_scram(
    make_broker: Any, password_path: str, raw: RawFactory, clock: ManualClock
) -> None:
    broker = make_broker(clock=clock, password_file=password_path, auth_backoff_after=1)
    assert scram_connect(raw, broker, "alice", "wrong")[2].reason_code == 0x87
    _, _, refusal = scram_connect(raw, broker, "alice", "wonderland")
    assert refusal.name == "CONNACK" and refusal.reason_code == 0x87  # no challenge at all
    broker.advance(1)
    assert scram_connect(raw, broker, "alice", "wonderland")[2].reason_code == 0


def reauthenticate(client: RawClient, user: str, password: str) -> Any:
    """Run a re-authentication, pinging between its steps (other packets keep flowing);
    returns the broker's answer to client-final."""
    scram = ScramClient(user, password, "r3auth")
    client.auth(REAUTHENTICATE, auth_props(scram.first()))
    challenge = client.expect("AUTH")
    assert challenge.reason_code == CONTINUE
    client.ping()
    client.auth(CONTINUE, auth_props(scram.final(challenge.props["AuthenticationData"])))
    answer = client.recv()
    if answer.name == "AUTH":
        assert scram.verify(answer.props["AuthenticationData"])
    return answer


def test_reauthentication_succeeds_and_the_session_goes_on(secured: Any, raw: RawFactory) -> None:
    client, _, connack = scram_connect(raw, secured, "alice", "wonderland")
    assert connack.reason_code == 0
    client.subscribe(1, [("r/#", 0)])
    for _ in range(2):
        success = reauthenticate(client, "alice", "wonderland")
        assert success.name == "AUTH" and success.reason_code == 0, success
        assert success.props["AuthenticationMethod"] == METHOD
    client.publish("r/1", b"still here")
    assert client.expect("PUBLISH").payload == b"still here"


@pytest.mark.parametrize(("user", "password"), [("alice", "wrong"), ("bob", "builder")])
def test_failed_reauthentication_disconnects_0x87(
    secured: Any, raw: RawFactory, user: str, password: str
) -> None:
    """A wrong password, or another user (even with the right password), ends it."""
    client, _, connack = scram_connect(raw, secured, "alice", "wonderland")
    assert connack.reason_code == 0
    disconnect = reauthenticate(client, user, password)
    assert disconnect.name == "DISCONNECT" and disconnect.reason_code == 0x87
    assert client.wait_closed() == []


def test_reauthentication_with_another_method_disconnects_0x8c(
    secured: Any, raw: RawFactory
) -> None:
    client, _, connack = scram_connect(raw, secured, "alice", "wonderland")
    assert connack.reason_code == 0
    client.auth(REAUTHENTICATE, auth_props(b"n,,n=alice,r=x", "SCRAM-SHA-1"))
    (disconnect,) = client.wait_closed()
    assert disconnect.name == "DISCONNECT" and disconnect.reason_code == 0x8C


def test_auth_continue_without_reauthentication_is_a_protocol_error(
    secured: Any, raw: RawFactory
) -> None:
    client, _, _ = scram_connect(raw, secured, "alice", "wonderland")
    client.auth(CONTINUE, auth_props(b"c=biws,r=x,p=AAAA"))
    (disconnect,) = client.wait_closed()
    assert disconnect.name == "DISCONNECT" and disconnect.reason_code == 0x82


def test_password_clients_cannot_reauthenticate(secured: Any, raw: RawFactory) -> None:
    client = raw(secured, 5)
    connack = client.connect("pw", username="alice", password=b"wonderland")
    assert connack is not None and connack.reason_code == 0
    client.auth(REAUTHENTICATE, auth_props(b"n,,n=alice,r=x"))
    (disconnect,) = client.wait_closed()
    assert disconnect.name == "DISCONNECT" and disconnect.reason_code == 0x82
