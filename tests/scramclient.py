"""A SCRAM-SHA-256 client written from RFC 5802 / RFC 7677 for the tests: it shares no code
with roost.security.scram, so an exchange between the two checks the server against the
RFC rather than against itself."""

from __future__ import annotations

import base64
import hashlib
import hmac


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


class ScramClient:
    """One client side of an exchange: :meth:`first`, :meth:`final` (given server-first),
    then :meth:`verify` (given server-final)."""

    def __init__(self, user: str, password: str, nonce: str) -> None:
        self.user = user
        self.password = password
        self.nonce = nonce
        self.bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self.bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        fields = dict(part.split("=", 1) for part in server_first.decode().split(","))
        assert fields["r"].startswith(self.nonce), "server nonce must extend the client's"
        salt = base64.b64decode(fields["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, int(fields["i"]))
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={fields['r']}"
        auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        """Whether the server proved it knows the user's keys."""
        return server_final == b"v=" + base64.b64encode(self.server_signature)
