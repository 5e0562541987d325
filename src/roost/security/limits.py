"""Limits on abuse (docs/limits.md): what one client may send per second, how often one
address may connect, how many connections one user may hold. Pure: every call takes
``now``, the broker's clock, so tests move time on by hand.

A client over its message or byte rate is not refused anything: the broker stops reading
from it until its bucket has refilled, so its publishes arrive at the limited rate. The
broker's periodic sweep resumes it (:meth:`Throttles.sweep`); one that is still over its
rate after ``rate_limit_grace`` seconds is disconnected.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from roost.config import Settings

T = TypeVar("T", bound=Hashable)

MAX_TRACKED_ADDRESSES = 65_536  # source addresses whose connection rate is remembered


class RateLimited(Hashable, Protocol):
    """What the sweep needs of a client it paused."""

    def rate_refilled(self) -> None:
        """Its bucket has refilled: read from it again."""
        ...

    def rate_exceeded(self) -> None:
        """It has stayed over its rate for the grace time: disconnect it."""
        ...


class TokenBucket:
    """``rate`` tokens a second, held up to ``capacity``; starts full.

    :meth:`take` is all or nothing (a new connection is refused when no token is left);
    :meth:`spend` always succeeds and may leave the bucket in debt, for work that was done
    already (a message read): the debt says how long the client must wait.
    """

    __slots__ = ("capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self.stamp = now

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._refill(now)
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def spend(self, amount: float, now: float) -> float:
        """Take ``amount`` tokens, into debt if need be; returns the seconds until the debt
        is paid back (0 when there is none)."""
        self._refill(now)
        self.tokens -= amount
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate

    def full_at(self) -> float:
        """When the bucket will be full again if nothing more is taken."""
        return self.stamp + (self.capacity - self.tokens) / self.rate


def _bucket_or_none(rate: int, burst: int, now: float) -> TokenBucket | None:
    """A bucket of ``rate`` a second holding one second's worth plus ``burst``; None
    for rate 0 (no limit)."""
    return TokenBucket(rate, rate + burst, now) if rate else None


class ClientRate:
    """The message and byte buckets of one client (either may be off)."""

    __slots__ = ("bytes", "messages")

    def __init__(self, messages: TokenBucket | None, payload_bytes: TokenBucket | None) -> None:
        self.messages = messages
        self.bytes = payload_bytes

    def spend(self, payload_bytes: int, now: float) -> float:
        """Count one PUBLISH with ``payload_bytes``; returns how long to stop reading (0:
        the client is within its rates)."""
        wait = 0.0
        if self.messages is not None:
            wait = self.messages.spend(1, now)
        if self.bytes is not None:
            wait = max(wait, self.bytes.spend(payload_bytes, now))
        return wait


class Throttles(Generic[T]):
    """Clients whose reading is paused for being over their rate, until when, and since
    when they have been over it.

    A client stays over its rate while every sweep finds it paused again (a client that
    keeps sending too fast is paused again right after it is resumed); a sweep that finds
    it reading ends that. One over its rate for ``grace`` seconds or more (0: never) is
    handed back by :meth:`sweep` to be disconnected.
    """

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._until: dict[T, float] = {}  # paused clients -> when their debt is paid
        self._since: dict[T, float] = {}  # clients over their rate -> since when

    def hold(self, client: T, until: float, now: float) -> None:
        """Reading from ``client`` is paused until ``until`` (or later, if already so)."""
        if until > self._until.get(client, 0.0):
            self._until[client] = until
        self._since.setdefault(client, now)

    def is_paused(self, client: T) -> bool:
        return client in self._until

    def forget(self, client: T) -> None:
        """The client's connection ended."""
        self._until.pop(client, None)
        self._since.pop(client, None)

    def sweep(self, now: float) -> tuple[list[T], list[T]]:
        """(clients to resume: their debt is paid; clients to disconnect: over their rate
        for ``grace`` seconds); both leave the table."""
        resume: list[T] = []
        expel: list[T] = []
        until_of = self._until
        for client, since in list(self._since.items()):
            until = until_of.get(client)
            if until is None:  # read since the last sweep without going over again
                del self._since[client]
            elif self.grace and now - since >= self.grace:
                expel.append(client)
                self.forget(client)
            elif until <= now:
                resume.append(client)
                del until_of[client]
        return resume, expel

    def __len__(self) -> int:
        """Clients over their rate (paused, or resumed since the last sweep)."""
        return len(self._since)


class AddressRates:
    """New connections per source address: a bucket per address, in order of last use.

    Memory stays bounded: an address whose bucket has refilled is as good as unknown and
    is dropped, and past ``max_addresses`` the least recently seen one goes (it starts
    afresh if it comes back).
    """

    def __init__(self, rate: int, burst: int, max_addresses: int = MAX_TRACKED_ADDRESSES) -> None:
        self.rate = rate
        self.capacity = rate + burst
        self.max_addresses = max_addresses
        self._buckets: dict[str, TokenBucket] = {}  # oldest use first

    def admits(self, address: str, now: float) -> bool:
        """Count a new connection from ``address``; False if it is over its rate."""
        self._expire(now)
        buckets = self._buckets
        bucket = buckets.pop(address, None)
        if bucket is None:
            bucket = TokenBucket(self.rate, self.capacity, now)
            if len(buckets) >= self.max_addresses:
                del buckets[next(iter(buckets))]
        buckets[address] = bucket  # now the most recently used
        return bucket.take(now)

    def _expire(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            address, oldest = next(iter(buckets.items()))
            if oldest.full_at() > now:
                return
            del buckets[address]

    def __len__(self) -> int:
        """Addresses remembered."""
        return len(self._buckets)


class UserConnections:
    """The client ids connected under each user name, to hold each user to ``maximum``
    connections (0: no limit, nothing is tracked). Clients without a user name are not
    counted."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self._clients: dict[str, set[str]] = {}

    def admits(self, username: str | None, client_id: str) -> bool:
        """Whether ``client_id`` may connect as ``username``: the user has fewer than the
        maximum, or this client id is one of them (a take-over replaces it)."""
        if not self.maximum or username is None:
            return True
        clients = self._clients.get(username)
        return clients is None or len(clients) < self.maximum or client_id in clients

    def add(self, username: str | None, client_id: str) -> None:
        if self.maximum and username is not None:
            self._clients.setdefault(username, set()).add(client_id)

    def remove(self, username: str | None, client_id: str) -> None:
        if not self.maximum or username is None:
            return
        clients = self._clients.get(username)
        if clients is not None:
            clients.discard(client_id)
            if not clients:
                del self._clients[username]

    def count(self, username: str) -> int:
        return len(self._clients.get(username, ()))


class Limits:
    """The abuse limits of one node, from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client_rates = bool(settings.client_message_rate or settings.client_byte_rate)
        self.throttles: Throttles[RateLimited] = Throttles(settings.rate_limit_grace)
        self.addresses: AddressRates | None = None
        if settings.address_connection_rate:
            self.addresses = AddressRates(
                settings.address_connection_rate, settings.address_connection_burst
            )
        self.users = UserConnections(settings.max_connections_per_user)

    def client_rate(self, now: float) -> ClientRate | None:
        """The buckets of a new client; None when neither rate is limited."""
        if not self.client_rates:
            return None
        settings = self.settings
        return ClientRate(
            _bucket_or_none(settings.client_message_rate, settings.client_message_burst, now),
            _bucket_or_none(settings.client_byte_rate, settings.client_byte_burst, now),
        )

    def admits_connection(self, peer: str, now: float) -> bool:
        """Whether a CONNECT from ``peer`` ("address:port") is within its address's
        connection rate."""
        if self.addresses is None:
            return True
        return self.addresses.admits(peer_address(peer), now)


def peer_address(peer: str) -> str:
    """The address part of "address:port" (IPv4 or IPv6); the text itself without a port."""
    address, colon, port = peer.rpartition(":")
    return address.strip("[]") if colon and port.isdigit() else peer
