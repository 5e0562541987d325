"""Exponential back-off of failed logins per source address and user name, against password
guessing.

Only logins that failed count (a wrong password, an unknown user, a failed SCRAM proof);
logins still being checked do not, so correct logins started at the same moment from one
address (a gateway, clients behind NAT) are all checked. Failures are counted per
(address, user name): a success forgets that pair only, so knowing one account's password
does not lift the wait of the others, and a client that fails for one user name does not
lock out the other users of its address. Once a pair has ``free_failures`` failures, it is
locked until ``2 ** (failures - free_failures)`` seconds (at most ``max_delay``) after its
last failure: attempts meanwhile are refused without a password check and do not count. A
pair without a new failure for ``10 * max_delay`` seconds is forgotten; at most
``max_entries`` pairs are remembered (the one idle the longest is forgotten first), so a
scan from many addresses or of many names cannot grow the table without bound.
``max_delay = 0`` turns the back-off off.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

FORGET_FACTOR = 10  # a pair is forgotten after FORGET_FACTOR * max_delay quiet seconds
MAX_ENTRIES = 100_000


@dataclass(slots=True)
class _Record:
    failures: int
    last: float  # time of the last failure


def login_key(address: str, username: str) -> str:
    """The back-off entry of ``username`` at ``address``, of bounded size whatever the
    name's length."""
    digest = hashlib.blake2b(username.encode(), digest_size=16).hexdigest()
    return f"{address} {digest}"


class LoginBackoff:
    """Failed logins per key (see :func:`login_key`), by ``clock`` (seconds, monotonic)."""

    def __init__(
        self,
        clock: Callable[[], float],
        free_failures: int,
        max_delay: float,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self._clock = clock
        self.free_failures = free_failures
        self.max_delay = max_delay
        self._max_entries = max_entries
        self._records: dict[str, _Record] = {}  # oldest last failure first

    def wait_left(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        record = self._records.get(key)
        if record is None or record.failures < self.free_failures:
            return 0.0
        delay = min(2.0 ** (record.failures - self.free_failures), self.max_delay)
        return max(0.0, record.last + delay - self._clock())

    def failed(self, key: str) -> None:
        """A login of ``key`` failed."""
        now = self._clock()
        self._forget_idle(now)
        record = self._records.pop(key, None)  # re-inserted last: the table stays sorted
        if record is None:
            record = _Record(0, now)
            if len(self._records) >= self._max_entries:
                del self._records[next(iter(self._records))]
        record.failures += 1
        record.last = now
        self._records[key] = record

    def succeeded(self, key: str) -> None:
        self._records.pop(key, None)

    def __len__(self) -> int:
        return len(self._records)

    def _forget_idle(self, now: float) -> None:
        horizon = now - FORGET_FACTOR * self.max_delay
        records = self._records
        while records:
            key = next(iter(records))
            if records[key].last > horizon:
                return
            del records[key]
