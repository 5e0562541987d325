"""SCRAM-SHA-256 (RFC 5802, RFC 7677) for MQTT 5 enhanced authentication: the verifiers a
password file stores for each user, and the server side of one exchange, sans I/O::

    client-first  ->  server-first  ->  client-final  ->  server-final

The server never sees the password: it keeps salt, iteration count, StoredKey and
ServerKey, checks the client's proof against StoredKey and proves with ServerKey that it
knows the user too. A user name that does not exist gets a made-up salt (the same each time
for the same secret) and fails at client-final, like a wrong password, so the exchange does
not tell which user names exist. Channel binding is not offered: the GS2 flag must be "n"
or "y"; "p=" is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from roost.errors import RoostError

METHOD = "SCRAM-SHA-256"  # the MQTT Authentication Method and the stored verifier's scheme
DEFAULT_ITERATIONS = 4096  # the minimum RFC 7677 asks for; clients compute it at each login
MIN_ITERATIONS = 4096
SALT_BYTES = 16
KEY_BYTES = 32  # SHA-256


class ScramError(RoostError):
    """The exchange failed: malformed message, unknown user or wrong proof."""


def saslprep(text: str) -> str:
    """SASLprep (RFC 4013) of a password: map, NFKC-normalize, refuse prohibited and
    unassigned characters and bad bidirectional text (raises ValueError)."""
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char
        for char in text
        if not stringprep.in_table_b1(char)
    )
    prepared = unicodedata.normalize("NFKC", mapped)
    for char in prepared:
        if _prohibited(char):
            raise ValueError(f"character U+{ord(char):04X} is not allowed (SASLprep)")
    right_to_left = [stringprep.in_table_d1(char) for char in prepared]
    if any(right_to_left) and (
        any(stringprep.in_table_d2(char) for char in prepared)
        or not (right_to_left[0] and right_to_left[-1])
    ):
        raise ValueError("mixed or badly delimited right-to-left text (SASLprep)")
    return prepared


def _prohibited(char: str) -> bool:
    return (
        stringprep.in_table_a1(char)
        or stringprep.in_table_c12(char)
        or stringprep.in_table_c21_c22(char)
        or stringprep.in_table_c3(char)
        or stringprep.in_table_c4(char)
        or stringprep.in_table_c5(char)
        or stringprep.in_table_c6(char)
        or stringprep.in_table_c7(char)
        or stringprep.in_table_c8(char)
        or stringprep.in_table_c9(char)
    )


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ScramError(f"{what} is not base64") from None


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    """What the server stores for one user (RFC 5802 section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
    ) -> ScramVerifier:
        """Derive the verifier of ``password`` (SASLprep'd, raises ValueError if it cannot
        be) with ``salt`` (random by default)."""
        salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
        salted = hashlib.pbkdf2_hmac("sha256", saslprep(password).encode(), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(
            salt, iterations, hashlib.sha256(client_key).digest(), _hmac(salted, b"Server Key")
        )

    def __str__(self) -> str:
        """The RFC 5803 form: ``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>``."""
        return (
            f"{METHOD}${self.iterations}:{_b64(self.salt)}"
            f"${_b64(self.stored_key)}:{_b64(self.server_key)}"
        )

    @classmethod
    def parse(cls, text: str) -> ScramVerifier:
        """Read the form :meth:`__str__` writes (raises ValueError)."""
        scheme, _, rest = text.partition("$")
        if scheme != METHOD:
            raise ValueError(f"SCRAM verifier does not start with {METHOD}$")
        try:
            salt_part, key_part = rest.split("$")
            iterations, salt = salt_part.split(":")
            stored_key, server_key = key_part.split(":")
        except ValueError:
            raise ValueError(
                f"SCRAM verifier is not {METHOD}$ITERATIONS:SALT$STOREDKEY:SERVERKEY"
            ) from None
        if not iterations.isdigit() or int(iterations) < MIN_ITERATIONS:
            raise ValueError(f"SCRAM iteration count must be an integer >= {MIN_ITERATIONS}")
        try:
            verifier = cls(
                _unb64(salt, "salt"),
                int(iterations),
                _unb64(stored_key, "StoredKey"),
                _unb64(server_key, "ServerKey"),
            )
        except ScramError as exc:
            raise ValueError(f"SCRAM verifier: {exc}") from None
        if len(verifier.stored_key) != KEY_BYTES or len(verifier.server_key) != KEY_BYTES:
            raise ValueError(f"SCRAM StoredKey and ServerKey must be {KEY_BYTES} bytes")
        if not verifier.salt:
            raise ValueError("SCRAM salt is empty")
        return verifier


def _printable(nonce: str) -> bool:
    """A nonce is printable ASCII without comma (RFC 5802 section 7)."""
    return bool(nonce) and all(0x21 <= ord(char) <= 0x7E and char != "," for char in nonce)


def _sasl_name(text: str) -> str:
    """Decode a saslname: "=2C" is a comma, "=3D" an equals sign, any other "=" is an error."""
    parts = text.split("=")
    name = parts[0]
    for part in parts[1:]:
        if part[:2] == "2C":
            name += "," + part[2:]
        elif part[:2] == "3D":
            name += "=" + part[2:]
        else:
            raise ScramError("user name has a bad '=' escape")
    return name


def _attribute(part: str, key: str) -> str:
    if not part.startswith(key + "="):
        raise ScramError(f"expected attribute {key!r}")
    return part[len(key) + 1 :]


class ScramServer:
    """The server side of one SCRAM-SHA-256 exchange: :meth:`server_first` answers the
    client-first message, :meth:`server_final` the client-final message (raising
    ScramError if the client did not prove it knows the password).

    ``lookup`` gives a user's verifier (None: no such user); ``secret`` makes the salts of
    unknown users, shown with ``made_up_iterations``; ``nonce`` (the server's part of the
    nonce) is random unless given.
    """

    def __init__(
        self,
        lookup: Callable[[str], ScramVerifier | None],
        secret: bytes,
        nonce: str | None = None,
        made_up_iterations: int = DEFAULT_ITERATIONS,
    ) -> None:
        self._lookup = lookup
        self._secret = secret
        self._made_up_iterations = made_up_iterations
        self._server_nonce = secrets.token_urlsafe(18) if nonce is None else nonce
        self.username: str | None = None  # from client-first
        self._verifier: ScramVerifier | None = None
        self._known = False
        self._gs2_header = ""
        self._nonce = ""
        self._auth_start = ""  # client-first-message-bare "," server-first-message

    def server_first(self, client_first: bytes) -> bytes:
        text = _text(client_first)
        try:
            flag, authzid, bare = text.split(",", 2)
        except ValueError:
            raise ScramError("client-first message has no GS2 header") from None
        if flag.startswith("p="):
            raise ScramError("channel binding is not supported")
        if flag not in ("n", "y"):
            raise ScramError(f"bad GS2 channel binding flag {flag!r}")
        attributes = bare.split(",")
        if len(attributes) < 2 or attributes[0].startswith("m="):
            raise ScramError("client-first message lacks user name and nonce")
        username = _sasl_name(_attribute(attributes[0], "n"))
        client_nonce = _attribute(attributes[1], "r")
        if authzid and _sasl_name(_attribute(authzid, "a")) != username:
            raise ScramError("authorization identity differs from the user name")
        if not username or not _printable(client_nonce):
            raise ScramError("empty user name or bad nonce")
        verifier = self._lookup(username)
        self._known = verifier is not None
        self._verifier = verifier or self._made_up(username)
        self.username = username
        self._gs2_header = f"{flag},{authzid},"
        self._nonce = client_nonce + self._server_nonce
        server_first = (
            f"r={self._nonce},s={_b64(self._verifier.salt)},i={self._verifier.iterations}"
        )
        self._auth_start = f"{bare},{server_first}"
        return server_first.encode()

    def server_final(self, client_final: bytes) -> bytes:
        verifier = self._verifier
        if verifier is None:
            raise ScramError("client-final message before client-first")
        self._verifier = None  # one attempt per exchange
        text = _text(client_final)
        without_proof, separator, proof_text = text.rpartition(",p=")
        if not separator:
            raise ScramError("client-final message has no proof")
        attributes = without_proof.split(",")
        if len(attributes) < 2:
            raise ScramError("client-final message lacks channel binding and nonce")
        binding = _unb64(_attribute(attributes[0], "c"), "channel binding")
        if binding != self._gs2_header.encode():
            raise ScramError("channel binding does not repeat the GS2 header")
        if _attribute(attributes[1], "r") != self._nonce:
            raise ScramError("nonce does not match")
        proof = _unb64(proof_text, "proof")
        auth_message = f"{self._auth_start},{without_proof}".encode()
        signature = _hmac(verifier.stored_key, auth_message)
        if len(proof) != KEY_BYTES:
            raise ScramError("proof has the wrong length")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        stored_key = hashlib.sha256(client_key).digest()
        if not hmac.compare_digest(stored_key, verifier.stored_key) or not self._known:
            raise ScramError("wrong proof")
        return b"v=" + _b64(_hmac(verifier.server_key, auth_message)).encode()

    def _made_up(self, username: str) -> ScramVerifier:
        """The same salt for the same unknown user each time; keys no proof can match."""
        seed = _hmac(self._secret, username.encode())
        return ScramVerifier(
            seed[:SALT_BYTES],
            self._made_up_iterations,
            _hmac(seed, b"stored"),
            _hmac(seed, b"server"),
        )


def _text(message: bytes) -> str:
    try:
        return message.decode()
    except UnicodeDecodeError:
        raise ScramError("message is not UTF-8") from None
