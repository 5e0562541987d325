"""TLS listeners: paho 3.1.1 and 5.0 verify the broker's certificate; client certificates
required, optional (verified when presented) or taken as the client's identity
(``use_identity_as_username``); a minimum TLS version; the certificate's fields reach the
authenticator."""

from __future__ import annotations

import logging
import socket
import ssl
import warnings
from pathlib import Path

import pytest
from tlspki import SERVER_NAME, Pki, endpoint

from adminhttp import TOKEN, AdminApi
from closelog import logged_closes
from paho_helpers import V5, V311
from rawmqtt import RawClient, connect_bytes
from roost.attach import Credentials, Verdict
from roost.config import Listener
from roost.security.passwords import make_entry, write_text
from roost.transport.tls import server_context
from scramclient import ScramClient

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def identity_listener(pki: Pki) -> Listener:
    """A TLS listener that requires a client certificate and takes its CN as user name."""
    return Listener(
        "tls",
        "127.0.0.1",
        0,
        pki.certfile,
        pki.keyfile,
        pki.cafile,
        require_certificate=True,
        use_identity_as_username=True,
        name="identity",
    )


def tls_handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection((SERVER_NAME, port), timeout=10)
    try:
        return context.wrap_socket(sock, server_hostname=SERVER_NAME)
    except BaseException:
        sock.close()
        raise


def mqtt_answer(port: int, context: ssl.SSLContext) -> bytes:
    """Complete a handshake, send an MQTT 3.1.1 CONNECT and return the first 4 bytes the
    broker answers: b"" when the handshake fails or the broker closes the connection
    (with TLS 1.3 the server checks the client's certificate after the client has
    finished its handshake: the client learns of a refusal on its first read)."""
    try:
        with tls_handshake(port, context) as tls:
            tls.sendall(connect_bytes("raw-tls"))
            answer = b""
            while len(answer) < 4:
                chunk = tls.recv(4 - len(answer))
                if not chunk:
                    return b""
                answer += chunk
            return answer
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return b""


@pytest.mark.parametrize("version", [V311, V5])
def test_paho_publishes_and_receives_over_tls(make_broker, clients, pki, version) -> None:
    broker = make_broker(tls_port=0, **pki.server_settings())
    tls = endpoint(broker, "tls")
    subscriber = clients.connect(tls, "tls-sub", version, prepare=pki.paho_tls())
    subscriber.sub("tls/topic", qos=1)
    publisher = clients.connect(broker, "tcp-pub", version)  # the main listener: plain TCP
    publisher.pub("tls/topic", b"across", qos=1)
    assert subscriber.wait_for_payload(b"across").topic == "tls/topic"


def test_a_client_that_does_not_trust_the_broker_fails_the_handshake(make_broker, pki) -> None:
    broker = make_broker(tls_port=0, **pki.server_settings())
    other_ca = Pki(pki.directory / "other")
    with pytest.raises(ssl.SSLCertVerificationError):
        tls_handshake(broker.broker.port_of("tls"), other_ca.client_context())


def test_a_required_client_certificate(make_broker, pki) -> None:
    broker = make_broker(
        tls_port=0, **pki.server_settings(cafile=pki.cafile, require_certificate=True)
    )
    port = broker.broker.port_of("tls")
    assert mqtt_answer(port, pki.client_context()) == b""  # no certificate
    stranger = Pki(pki.directory / "stranger").client_cert("mallory")
    assert mqtt_answer(port, pki.client_context(stranger)) == b""  # from another CA
    alice = pki.client_cert("alice")
    assert mqtt_answer(port, pki.client_context(alice)) == CONNACK_ACCEPTED


class CertificateRecorder:
    """Allows everyone; records the credentials each client attached with."""

    def __init__(self) -> None:
        self.seen: list[Credentials] = []

    async def authenticate(self, credentials: Credentials) -> Verdict:
        self.seen.append(credentials)
        return Verdict.allow()


def test_an_optional_certificate_is_verified_when_presented(make_broker, pki) -> None:
    recorder = CertificateRecorder()
    settings = pki.server_settings(cafile=pki.cafile)
    broker = make_broker(authenticator=recorder, tls_port=0, **settings)
    port = broker.broker.port_of("tls")
    assert mqtt_answer(port, pki.client_context()) == CONNACK_ACCEPTED
    assert mqtt_answer(port, pki.client_context(pki.client_cert("bob"))) == CONNACK_ACCEPTED
    stranger = Pki(pki.directory / "stranger").client_cert("mallory")
    assert mqtt_answer(port, pki.client_context(stranger)) == b""
    without, with_cert = recorder.seen
    assert without.certificate is None
    assert with_cert.certificate is not None
    subject, issuer = with_cert.certificate["subject"], with_cert.certificate["issuer"]
    assert isinstance(subject, dict) and subject["commonName"] == "bob"
    assert isinstance(issuer, dict) and issuer["organizationName"].startswith("trustme")


def test_use_identity_as_username_makes_the_cn_the_identity(make_broker, clients, pki) -> None:
    recorder = CertificateRecorder()
    listener = identity_listener(pki)
    broker = make_broker(
        authenticator=recorder, listeners=(listener,), http_port=0, admin_token=TOKEN
    )
    sensor = pki.client_cert("sensor-7")
    clients.connect(endpoint(broker, "tls"), "device-1", V5, prepare=pki.paho_tls(sensor))
    status, listed = AdminApi(broker).get("/api/v1/clients/device-1")
    assert status == 200
    assert listed["username"] == "sensor-7"
    assert recorder.seen == []  # no password check on this listener, as in Mosquitto
    # Over plain TCP, without a user name, a client has none.
    clients.connect(broker, "plain-1", V5)
    assert AdminApi(broker).get("/api/v1/clients/plain-1")[1]["username"] is None


def test_the_cn_replaces_a_user_name_sent_in_connect(make_broker, clients, pki) -> None:
    listener = Listener(
        "tls", "127.0.0.1", 0, pki.certfile, pki.keyfile, pki.cafile, True, True, name="id"
    )
    broker = make_broker(listeners=(listener,), http_port=0, admin_token=TOKEN)
    cert = pki.client_cert("meter-3")

    def prepare(client) -> None:  # type: ignore[no-untyped-def]
        pki.paho_tls(cert)(client)
        client.username_pw_set("admin", "guess")

    clients.connect(endpoint(broker, "tls"), "meter", V311, prepare=prepare)
    assert AdminApi(broker).get("/api/v1/clients/meter")[1]["username"] == "meter-3"


def test_a_certificate_without_cn_is_refused_on_an_identity_listener(make_broker, pki) -> None:
    listener = Listener(
        "tls", "127.0.0.1", 0, pki.certfile, pki.keyfile, pki.cafile, True, True, name="id"
    )
    broker = make_broker(listeners=(listener,))
    no_cn = pki.client_cert(None)
    assert mqtt_answer(broker.broker.port_of("tls"), pki.client_context(no_cn)) == b""
    assert mqtt_answer(broker.broker.port_of("tls"), pki.client_context(pki.client_cert("x"))) == (
        CONNACK_ACCEPTED
    )


def test_a_client_below_the_minimum_tls_version_is_refused(make_broker, pki) -> None:
    listener = Listener(
        "tls", "127.0.0.1", 0, pki.certfile, pki.keyfile, min_tls_version="1.3", name="tls13"
    )
    broker = make_broker(listeners=(listener,))
    port = broker.broker.port_of("tls")
    with pytest.raises(ssl.SSLError, match=r"(?i)version|protocol"):
        tls_handshake(port, pki.client_context(maximum=ssl.TLSVersion.TLSv1_2))
    with tls_handshake(port, pki.client_context()) as tls:
        assert tls.version() == "TLSv1.3"


def test_the_default_minimum_is_tls_1_2(make_broker, pki) -> None:
    broker = make_broker(tls_port=0, **pki.server_settings())
    port = broker.broker.port_of("tls")
    with tls_handshake(port, pki.client_context(maximum=ssl.TLSVersion.TLSv1_2)) as tls:
        assert tls.version() == "TLSv1.2"
    context = pki.client_context()
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        tls_handshake(port, context)


def test_tls_contexts_refuse_renegotiation(pki) -> None:
    listener = Listener("tls", "127.0.0.1", 0, name="tls", **pki.server_settings())
    assert server_context(listener).options & ssl.OP_NO_RENEGOTIATION


def tls_raw(port: int, context: ssl.SSLContext) -> RawClient:
    """A raw MQTT 5 client over TLS."""
    client = RawClient.__new__(RawClient)
    client.sock, client.version, client.buf, client.closed = (
        tls_handshake(port, context),
        5,
        bytearray(),
        False,
    )
    return client


def test_a_tls_client_that_drops_is_logged_with_its_address(make_broker, pki, caplog) -> None:
    # The TLS layer lets go of the socket before the connection hears of the close.
    broker = make_broker(tls_port=0, **pki.server_settings())
    client = tls_raw(broker.broker.port_of("tls"), pki.client_context())
    with caplog.at_level(logging.INFO, logger="roost.protocol"):
        connack = client.connect("tls-sensor")
        assert connack is not None and connack.reason_code == 0
        host, port = client.sock.getsockname()
        client.drop()
        closes = logged_closes(caplog, "tls-sensor")
    assert closes == [
        f"client tls-sensor disconnected from {host}:{port} (MQTT 5.0): connection lost"
    ]


@pytest.mark.parametrize(
    ("scram_user", "password", "code"), [("alice", "a", 0), ("bob", "b", 0x87)]
)
def test_a_scram_login_on_an_identity_listener_must_be_the_certificates_cn(
    make_broker, pki, tmp_path, scram_user, password, code
) -> None:
    passwords = str(tmp_path / "passwords")
    users = [make_entry("alice", "a"), make_entry("bob", "b")]
    write_text(passwords, "".join(user.line() + "\n" for user in users))
    listener = identity_listener(pki)
    broker = make_broker(password_file=passwords, listeners=(listener,))
    client = tls_raw(broker.broker.port_of("tls"), pki.client_context(pki.client_cert("alice")))
    scram = ScramClient(scram_user, password, "n0nce")
    method = ("AuthenticationMethod", "SCRAM-SHA-256")
    challenge = client.connect("cn", props=[method, ("AuthenticationData", scram.first())])
    assert challenge is not None and challenge.name == "AUTH"
    final = scram.final(challenge.props["AuthenticationData"])
    client.auth(0x18, [method, ("AuthenticationData", final)])
    connack = client.expect("CONNACK")
    assert connack.reason_code == code
    client.drop()
