"""Logins against the password file: user name and password at CONNECT, and SCRAM-SHA-256
for MQTT 5 enhanced authentication (at CONNECT and for re-authentication).

Password hashes are checked in a small pool of worker threads, so the event loop serves
other clients meanwhile; a user name that does not exist costs the same hash (see
:meth:`PasswordFile.check`). At most ``auth_max_pending`` checks wait for or run in the
pool: a login beyond that is refused at once with 0x89 Server busy (3.1.1: 3 Server
unavailable) rather than queued behind a flood, and the check of a client that closes
before its turn is dropped (the attach is cancelled, and with it the pool's job).

Every attempt goes through the back-off (:mod:`roost.security.backoff`). Refusals: a wrong
password, an unknown user or a missing one where it is required get 0x86 Bad user name or
password (MQTT 3.1.1: 4); an address that must wait, or a failed SCRAM exchange, get 0x87
Not authorized (3.1.1: 5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor

from roost.attach import Credentials, Verdict
from roost.config import Settings
from roost.errors import ReasonCode
from roost.protocol import AuthStep
from roost.security.backoff import LoginBackoff, login_key
from roost.security.passwords import PasswordFile
from roost.security.scram import METHOD as SCRAM_METHOD
from roost.security.scram import ScramError, ScramServer

log = logging.getLogger("roost.security.authenticator")

HASH_WORKERS = 2  # threads checking password hashes (each check is CPU-bound)
TURNS_PER_ADDRESS = HASH_WORKERS  # logins of one address checked at once; more wait


def source_address(peer: str) -> str:
    """The address of a ``HOST:PORT`` peer (the unit the back-off counts by)."""
    return peer.rpartition(":")[0] or peer


class _Turn:
    __slots__ = ("semaphore", "users")

    def __init__(self, limit: int) -> None:
        self.semaphore = asyncio.Semaphore(limit)
        self.users = 0  # logins holding or waiting for the semaphore


class AddressTurns:
    """At most ``limit`` logins of one address are checked at once; the others wait their
    turn (in arrival order) instead of being refused, and cannot fill the check queue for
    every other address. Waiting costs nothing but the connection, which the CONNECT
    timeout bounds."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._turns: dict[str, _Turn] = {}  # addresses with logins in progress

    @contextlib.asynccontextmanager
    async def turn(self, address: str) -> AsyncIterator[None]:
        entry = self._turns.get(address)
        if entry is None:
            entry = self._turns[address] = _Turn(self._limit)
        entry.users += 1
        try:
            async with entry.semaphore:
                yield
        finally:
            entry.users -= 1
            if not entry.users:
                del self._turns[address]

    def __len__(self) -> int:
        return len(self._turns)


class PasswordAuthenticator:
    """The Authenticator and EnhancedAuth of a broker with a password file."""

    def __init__(
        self,
        passwords: PasswordFile,
        backoff: LoginBackoff,
        allow_anonymous: bool,
        max_pending: int,
    ) -> None:
        self.passwords = passwords
        self.backoff = backoff
        self.allow_anonymous = allow_anonymous
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(HASH_WORKERS, thread_name_prefix="roost-auth")
        self._jobs: set[Future[bool]] = set()  # checks queued or running
        self._turns = AddressTurns(TURNS_PER_ADDRESS)
        self._checks_lock = threading.Lock()
        self.checks = 0  # password hashes computed (a figure; counted in the workers)

    @property
    def pending(self) -> int:
        """Password checks queued or running in the pool."""
        return len(self._jobs)

    @classmethod
    def for_settings(
        cls, passwords: PasswordFile, settings: Settings, clock: Callable[[], float]
    ) -> PasswordAuthenticator:
        """The authenticator a node's settings ask for (``clock`` times the back-off)."""
        backoff = LoginBackoff(clock, settings.auth_backoff_after, settings.auth_backoff_max)
        log.info(
            "password file %s: %d users; anonymous clients %s",
            settings.password_file,
            len(passwords),
            "allowed" if settings.allow_anonymous else "refused",
        )
        return cls(passwords, backoff, settings.allow_anonymous, settings.auth_max_pending)

    async def authenticate(self, credentials: Credentials) -> Verdict:
        username = credentials.username
        if username is None:
            if self.allow_anonymous:
                return Verdict.allow()
            return Verdict.deny(ReasonCode.BAD_USER_NAME_OR_PASSWORD, "a user name is required")
        address = source_address(credentials.peer)
        key = login_key(address, username)
        async with self._turns.turn(address):
            refusal = self.refusal_for(key, address)  # failures may have come in meanwhile
            if refusal is not None:
                return refusal
            if len(self._jobs) >= self.max_pending:
                return Verdict.deny(
                    ReasonCode.SERVER_BUSY, f"{self.max_pending} password checks are waiting"
                )
            password = credentials.password or b""
            job = self._executor.submit(self._check, username, password)
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)  # also when cancelled before it ran
            matched = await asyncio.wrap_future(job)
        if matched:
            self.backoff.succeeded(key)
            return Verdict.allow()
        self.backoff.failed(key)
        return Verdict.deny(
            ReasonCode.BAD_USER_NAME_OR_PASSWORD, f"bad user name or password for {username!r}"
        )

    def _check(self, username: str, password: bytes) -> bool:
        """The password check of one login (in a worker thread)."""
        with self._checks_lock:
            self.checks += 1
        return self.passwords.check(username, password)

    def start_exchange(self, method: str, peer: str) -> ScramExchange | None:
        if method != SCRAM_METHOD:
            return None
        passwords = self.passwords
        server = ScramServer(
            passwords.scram_verifier,
            passwords.scram_secret,
            made_up_iterations=passwords.scram_iterations,
        )
        return ScramExchange(server, source_address(peer), self)

    def refusal_for(self, key: str, address: str) -> Verdict | None:
        """The refusal for a login (:func:`login_key`) that must wait, else None."""
        wait = self.backoff.wait_left(key)
        if not wait:
            return None
        return Verdict.deny(
            ReasonCode.NOT_AUTHORIZED,
            f"too many failed logins from {address}; retry in {math.ceil(wait)} s",
        )

    def close(self) -> None:
        """Stop the hash workers (at shutdown)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


class ScramExchange:
    """One SCRAM-SHA-256 exchange (an AuthExchange): client-first is answered with
    server-first (CONTINUE), client-final with server-final (SUCCESS) or a refusal. Only
    HMACs are computed, so it runs on the event loop. The back-off counts by the user name
    of client-first: a locked one gets no challenge, a wrong proof is a failure."""

    def __init__(self, server: ScramServer, address: str, owner: PasswordAuthenticator) -> None:
        self._server = server
        self._address = address
        self._owner = owner
        self._key: str | None = None  # the back-off entry, once client-first named the user

    def step(self, data: bytes) -> AuthStep:
        if self._key is None:
            try:
                server_first = self._server.server_first(data)
            except ScramError as exc:
                return self._failed(exc)
            assert self._server.username is not None
            self._key = login_key(self._address, self._server.username)
            refusal = self._owner.refusal_for(self._key, self._address)
            if refusal is not None:
                log.info("SCRAM from %s refused: %s", self._address, refusal.text)
                return AuthStep(ReasonCode.NOT_AUTHORIZED)
            return AuthStep(ReasonCode.CONTINUE_AUTHENTICATION, server_first)
        try:
            final = self._server.server_final(data)
        except ScramError as exc:
            self._owner.backoff.failed(self._key)
            return self._failed(exc)
        self._owner.backoff.succeeded(self._key)  # forgets this user's failures only
        return AuthStep(ReasonCode.SUCCESS, final, self._server.username)

    def _failed(self, exc: ScramError) -> AuthStep:
        user = self._server.username
        log.info("SCRAM from %s failed (user %r): %s", self._address, user, exc)
        return AuthStep(ReasonCode.NOT_AUTHORIZED)
