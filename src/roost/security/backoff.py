"""Exponential back-off of logins per source address, against password guessing.

Each login attempt from an address counts as a failure until it succeeds (so attempts made
at the same moment count too); success forgets the address. Once an address has
``free_failures`` failures, it is locked until ``2 ** (failures - free_failures)`` seconds
(at most ``max_delay``) after its last failure: attempts meanwhile are refused without a
password check and do not count. An address without a new failure for ``10 * max_delay``
seconds is forgotten; at most ``max_addresses`` addresses are remembered (the one idle the
longest is forgotten first), so a scan from many addresses cannot grow the table without
bound. ``max_delay = 0`` turns the back-off off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

FORGET_FACTOR = 10  # an address is forgotten after FORGET_FACTOR * max_delay quiet seconds
MAX_ADDRESSES = 100_000


@dataclass(slots=True)
class _Record:
    failures: int
    last: float  # time of the last failure


class LoginBackoff:
    """Failed logins per address, by ``clock`` (seconds, monotonic)."""

    def __init__(
        self,
        clock: Callable[[], float],
        free_failures: int,
        max_delay: float,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self._clock = clock
        self.free_failures = free_failures
        self.max_delay = max_delay
        self._max_addresses = max_addresses
        self._records: dict[str, _Record] = {}  # oldest last failure first

    def wait_left(self, address: str) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        record = self._records.get(address)
        if record is None or record.failures < self.free_failures:
            return 0.0
        delay = min(2.0 ** (record.failures - self.free_failures), self.max_delay)
        return max(0.0, record.last + delay - self._clock())

    def attempt(self, address: str) -> None:
        """A login from ``address`` begins: it counts as a failure until :meth:`succeeded`."""
        now = self._clock()
        self._forget_idle(now)
        record = self._records.pop(address, None)  # re-inserted last: the table stays sorted
        if record is None:
            record = _Record(0, now)
            if len(self._records) >= self._max_addresses:
                del self._records[next(iter(self._records))]
        record.failures += 1
        record.last = now
        self._records[address] = record

    def succeeded(self, address: str) -> None:
        self._records.pop(address, None)

    def __len__(self) -> int:
        return len(self._records)

    def _forget_idle(self, now: float) -> None:
        horizon = now - FORGET_FACTOR * self.max_delay
        records = self._records
        while records:
            address = next(iter(records))
            if records[address].last > horizon:
                return
            del records[address]
