"""The attach step between CONNECT and CONNACK: authenticate the client, then let the
connection take its session.

It runs on the event loop, possibly across several loop turns (a password hash computed in
a thread, a remote identity service, later a session claimed from another cluster node);
the connection handles nothing else meanwhile, so the packets behind CONNECT keep their
order. A CONNECT with an Authentication Method (MQTT 5 enhanced authentication) is
authenticated by an exchange of AUTH packets instead (see :class:`EnhancedAuth`).
When nothing has to wait (no authenticator, no cluster), the attach completes at once,
without a task.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from roost.codec import Properties
from roost.errors import ReasonCode, RoostError
from roost.negotiation import ConnectTerms
from roost.protocol import AuthExchange, AuthStep, EnhancedAuth, ServerConnection

log = logging.getLogger("roost.attach")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client presents at CONNECT, and where it comes from."""

    client_id: str
    username: str | None
    password: bytes | None
    peer: str  # "address:port" of the client
    protocol_level: int
    certificate: dict[str, object] | None = None  # the verified TLS client certificate's fields


@dataclass(frozen=True, slots=True)
class Verdict:
    """An authenticator's answer: allowed, or refused with a CONNACK reason code."""

    allowed: bool
    reason: ReasonCode = ReasonCode.SUCCESS
    text: str = field(default="")

    @classmethod
    def allow(cls) -> Verdict:
        return cls(True)

    @classmethod
    def deny(cls, reason: ReasonCode, text: str = "not authorized") -> Verdict:
        return cls(False, reason, text)


class Authenticator(Protocol):
    """Decides who may connect. It may take its time: it runs while the connection waits."""

    async def authenticate(self, credentials: Credentials) -> Verdict: ...


class ClaimRefused(RoostError):
    """The session cannot be claimed now (e.g. the node is cut off from its cluster)."""


class SessionClaimer(Protocol):
    """Makes this node the one owner of a client id before the client is attached (in a
    cluster: the claim in Redis, the take-over from another node, loading the session)."""

    async def claim(self, terms: ConnectTerms) -> None:
        """Claim the session of the client that CONNECTed with ``terms``; raises
        ClaimRefused when it cannot be served here now."""
        ...


class Redirector(Protocol):
    """Sends clients to another server (MQTT 5 CONNACK 0x9C with a Server Reference)."""

    def redirect(self, protocol_level: int) -> str | None:
        """HOST:PORT of the server the client should use, or None to serve it here."""
        ...


class Attacher:
    """Runs the attach of each connection (the ``attach`` callable of ServerConnection):
    the redirect, authentication, then the claim of the session. Without authenticator
    and claimer, it completes at once. ``enhanced_auth`` serves clients that name an
    Authentication Method; without it they are refused (0x8C)."""

    def __init__(
        self,
        authenticator: Authenticator | None = None,
        claimer: SessionClaimer | None = None,
        redirector: Redirector | None = None,
        enhanced_auth: EnhancedAuth | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.claimer = claimer
        self.redirector = redirector
        self.enhanced_auth = enhanced_auth
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, connection: ServerConnection) -> None:
        # A redirect comes first: the session is claimed by the node that serves it, and
        # the credentials are checked there.
        if self.redirector is not None and self._redirected(connection):
            return
        assert connection.terms is not None
        method = connection.terms.auth_method
        if method is not None and self.enhanced_auth is None:
            connection.refuse_connect(
                ReasonCode.BAD_AUTHENTICATION_METHOD, f"authentication method {method!r}"
            )
            return
        vouched = connection.transport.identity  # Mosquitto's use_identity_as_username
        if vouched is not None:
            connection.username = vouched  # no password is checked for it
        checked = self.authenticator is not None and vouched is None
        if not checked and self.claimer is None and method is None:
            connection.complete_connect()
            return
        task = asyncio.get_running_loop().create_task(self._attach(connection))
        self._tasks.add(task)  # keep a reference until done
        task.add_done_callback(self._tasks.discard)
        # A client that leaves while it is authenticated: its password check, if not
        # started yet, is dropped (cancelling the task cancels the executor job).
        connection.attach_abort = task.cancel

    def _redirected(self, connection: ServerConnection) -> bool:
        assert self.redirector is not None and connection.terms is not None
        server = self.redirector.redirect(connection.terms.protocol_level)
        if server is None:
            return False
        connection.refuse_connect(
            ReasonCode.USE_ANOTHER_SERVER,
            f"use another server: {server}",
            Properties(server_reference=server),
        )
        return True

    async def _attach(self, connection: ServerConnection) -> None:
        terms = connection.terms
        assert terms is not None
        auth_data = None
        if terms.auth_method is None:
            verdict = await self._authenticate(connection)
        else:
            verdict, auth_data = await self._exchange(connection, terms.auth_method)
        # From here on the attach is not interrupted (a claim half done would be left
        # behind); a connection that closed is not claimed for.
        connection.attach_abort = None
        if verdict.allowed and self.claimer is not None and not connection.closed:
            try:
                await self.claimer.claim(terms)
            except ClaimRefused as exc:
                verdict = Verdict.deny(ReasonCode.SERVER_UNAVAILABLE, str(exc))
            except Exception:
                log.exception("claiming the session of client %s failed", terms.client_id)
                verdict = Verdict.deny(ReasonCode.SERVER_UNAVAILABLE, "session claim failed")
        if verdict.allowed:
            connection.complete_connect(auth_data)
        else:
            connection.refuse_connect(verdict.reason, verdict.text)

    async def _authenticate(self, connection: ServerConnection) -> Verdict:
        terms = connection.terms
        assert terms is not None
        if self.authenticator is None or connection.transport.identity is not None:
            return Verdict.allow()
        credentials = Credentials(
            terms.client_id,
            terms.username,
            terms.password,
            connection.transport.peer,
            terms.protocol_level,
            connection.transport.certificate,
        )
        try:
            return await self.authenticator.authenticate(credentials)
        except Exception:
            log.exception("the authenticator failed for client %s", terms.client_id)
            return Verdict.deny(ReasonCode.SERVER_UNAVAILABLE, "authentication failed")

    async def _exchange(
        self, connection: ServerConnection, method: str
    ) -> tuple[Verdict, bytes | None]:
        """Run the enhanced authentication of ``method``: (verdict, the Authentication Data
        for CONNACK)."""
        assert self.enhanced_auth is not None and connection.terms is not None
        exchange = self.enhanced_auth.start_exchange(method, connection.transport.peer)
        if exchange is None:
            reason = ReasonCode.BAD_AUTHENTICATION_METHOD
            return Verdict.deny(reason, f"authentication method {method!r}"), None
        try:
            step = await self._steps(connection, exchange, connection.terms.auth_data or b"")
        except Exception:
            log.exception("the %s exchange failed for client %s", method, connection.client_id)
            return Verdict.deny(ReasonCode.SERVER_UNAVAILABLE, "authentication failed"), None
        if step is None:
            return Verdict.deny(ReasonCode.NOT_AUTHORIZED, "closed during authentication"), None
        if step.reason != ReasonCode.SUCCESS:
            return Verdict.deny(step.reason, f"{method} authentication failed"), None
        vouched = connection.transport.identity
        if step.identity is not None and vouched is not None and step.identity != vouched:
            # On a use_identity_as_username listener the certificate names the client.
            text = f"{method} user {step.identity!r} is not the certificate's {vouched!r}"
            return Verdict.deny(ReasonCode.NOT_AUTHORIZED, text), None
        if step.identity is not None:
            connection.username = step.identity
        connection.enhanced_auth = self.enhanced_auth  # for re-authentication
        return Verdict.allow(), step.data

    @staticmethod
    async def _steps(
        connection: ServerConnection, exchange: AuthExchange, data: bytes
    ) -> AuthStep | None:
        """Feed the client's data to ``exchange`` and send its challenges until it is done
        (its last step), or the connection closed (None)."""
        while True:
            step = exchange.step(data)
            if step.reason != ReasonCode.CONTINUE_AUTHENTICATION:
                return step
            answer = await _challenge(connection, step.data)
            if answer is None:
                return None
            data = answer

    @property
    def attaching(self) -> int:
        """How many attaches are waiting for the authenticator."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for the attaches in progress (at shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def _challenge(connection: ServerConnection, data: bytes | None) -> bytes | None:
    """Send the client an AUTH challenge; its answer, or None if the connection closed."""
    response: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()

    def answered(answer: bytes | None) -> None:
        if not response.done():
            response.set_result(answer)

    connection.challenge(data, answered)
    return await response
