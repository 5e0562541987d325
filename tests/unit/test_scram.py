"""SCRAM-SHA-256 server (roost.security.scram) against the RFC 7677 test vector and a client
written from the RFC (tests/scramclient.py): the exchange, failures, stored verifiers."""

from __future__ import annotations

import base64

import pytest

from roost.security.scram import ScramError, ScramServer, ScramVerifier, saslprep
from scramclient import ScramClient

# RFC 7677 section 3: user "user", password "pencil".
CLIENT_NONCE = "rOprNGfwEbeRWgbNEkqO"
SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
CLIENT_FIRST = b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
SERVER_FIRST = (
    b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
CLIENT_FINAL = (
    b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

PENCIL = ScramVerifier.from_password("pencil", SALT, 4096)
SECRET = b"s" * 32


def server(nonce: str = SERVER_NONCE) -> ScramServer:
    return ScramServer({"user": PENCIL}.get, SECRET, nonce)


def test_rfc7677_vector() -> None:
    scram = server()
    assert scram.server_first(CLIENT_FIRST) == SERVER_FIRST
    assert scram.server_final(CLIENT_FINAL) == SERVER_FINAL
    assert scram.username == "user"


def test_hand_written_client_reproduces_the_vector_and_verifies_the_server() -> None:
    client = ScramClient("user", "pencil", CLIENT_NONCE)
    assert client.first() == CLIENT_FIRST
    assert client.final(SERVER_FIRST) == CLIENT_FINAL
    assert client.verify(SERVER_FINAL)


def test_exchange_with_random_server_nonce() -> None:
    scram = ScramServer({"user": PENCIL}.get, SECRET)
    client = ScramClient("user", "pencil", "abc123")
    final = scram.server_final(client.final(scram.server_first(client.first())))
    assert client.verify(final)


def test_wrong_password_fails() -> None:
    scram = server()
    client = ScramClient("user", "pen", CLIENT_NONCE)
    with pytest.raises(ScramError, match="wrong proof"):
        scram.server_final(client.final(scram.server_first(client.first())))


def test_unknown_user_gets_a_stable_made_up_salt_and_fails_like_a_wrong_password() -> None:
    first = server().server_first(b"n,,n=nobody,r=abc")
    again = server("other").server_first(b"n,,n=nobody,r=xyz")
    assert first.split(b",")[1:] == again.split(b",")[1:]  # same salt and iterations
    assert b"i=4096" in first
    scram = server()
    client = ScramClient("nobody", "pencil", "abc")
    with pytest.raises(ScramError, match="wrong proof"):
        scram.server_final(client.final(scram.server_first(client.first())))


def test_escaped_user_name() -> None:
    verifier = ScramVerifier.from_password("pw")
    scram = ScramServer({"a,b=c": verifier}.get, SECRET)
    client = ScramClient("a,b=c", "pw", "n0nce")
    assert client.verify(scram.server_final(client.final(scram.server_first(client.first()))))
    assert scram.username == "a,b=c"


@pytest.mark.parametrize(
    "client_first",
    [
        b"p=tls-unique,,n=user,r=abc",  # channel binding
        b"x,,n=user,r=abc",  # bad GS2 flag
        b"n,,m=ext,n=user,r=abc",  # reserved extension
        b"n,,n=user",  # no nonce
        b"n,,n=us=41er,r=abc",  # bad escape
        b"n,a=admin,n=user,r=abc",  # another authorization identity
        b"n,,n=,r=abc",  # empty user
        b"\xff\xfe",  # not UTF-8
        b"n,,n=user,r=",  # empty nonce
    ],
)
def test_malformed_client_first(client_first: bytes) -> None:
    with pytest.raises(ScramError):
        server().server_first(client_first)


def test_extensions_after_the_nonce_are_ignored() -> None:
    assert server().server_first(b"n,,n=user,r=abc,x=ext").startswith(b"r=abc")


@pytest.mark.parametrize(
    "client_final",
    [
        CLIENT_FINAL.replace(b"c=biws", b"c=eSws"),  # channel binding "y,," differs
        CLIENT_FINAL.replace(b"$k0,", b"$k1,"),  # nonce changed
        CLIENT_FINAL.split(b",p=")[0],  # no proof
        CLIENT_FINAL[:-8] + b"AAAAAAA=",  # proof altered
        CLIENT_FINAL.replace(b"p=dHzb", b"p=!!!!"),  # proof not base64
    ],
)
def test_malformed_or_wrong_client_final(client_final: bytes) -> None:
    scram = server()
    scram.server_first(CLIENT_FIRST)
    with pytest.raises(ScramError):
        scram.server_final(client_final)


def test_one_attempt_per_exchange() -> None:
    scram = server()
    scram.server_first(CLIENT_FIRST)
    with pytest.raises(ScramError):
        scram.server_final(CLIENT_FINAL.replace(b"p=dHzb", b"p=AHzb"))
    with pytest.raises(ScramError):
        scram.server_final(CLIENT_FINAL)  # the right proof, too late


def test_final_before_first() -> None:
    with pytest.raises(ScramError):
        server().server_final(CLIENT_FINAL)


def test_verifier_round_trip_and_rfc5803_form() -> None:
    text = str(PENCIL)
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert ScramVerifier.parse(text) == PENCIL


@pytest.mark.parametrize(
    "text",
    [
        "SCRAM-SHA-1$4096:c2FsdA==$" + "A" * 44 + ":" + "A" * 44,
        "SCRAM-SHA-256$4096:c2FsdA==$" + "A" * 44,
        "SCRAM-SHA-256$100:c2FsdA==$" + "A" * 44 + ":" + "A" * 44,  # too few iterations
        "SCRAM-SHA-256$4096:c2FsdA==$AAAA:AAAA",  # keys too short
        "SCRAM-SHA-256$4096:!!$" + "A" * 44 + ":" + "A" * 44,
    ],
)
def test_bad_verifier_text(text: str) -> None:
    with pytest.raises(ValueError):
        ScramVerifier.parse(text)


def test_saslprep() -> None:
    assert saslprep("I\u00adX") == "IX"  # soft hyphen mapped to nothing (RFC 4013 example)
    assert saslprep("\u00aa") == "a"  # NFKC
    assert saslprep("a\u00a0b") == "a b"  # non-ASCII space
    with pytest.raises(ValueError):
        saslprep("a\u0007")  # control character
    with pytest.raises(ValueError):
        saslprep("\u0627\u0031")  # RandALCat not at both ends
