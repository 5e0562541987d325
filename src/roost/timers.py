"""Timer structures shared by all connections and sessions; every call takes ``now``.

No timer per connection [MISSION §4]: the broker runs ONE periodic sweep that asks these
structures what is due. Each item has at most one live entry: scheduling it again replaces
its entry, and an item that goes away (a closed connection, a resumed session) is removed
at once, so nothing stays referenced until a far deadline comes. A heartbeat still costs
one attribute write: the owner re-checks an item when it comes due and re-schedules it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable
from itertools import count
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class _Bucket(dict[T, None]):
    """The items of one slot, in insertion order (an item leaves without a search)."""

    __slots__ = ("slot",)

    def __init__(self, slot: int) -> None:
        super().__init__()
        self.slot = slot


class TimingWheel(Generic[T]):
    """Buckets of items by deadline, ``resolution`` seconds wide (a hashed timing wheel).

    ``schedule`` and ``discard`` are O(1); ``due`` visits only the buckets whose time has
    come. Each item maps to its bucket, shared with the other items of its slot, not to a
    slot number of its own: one int object less per item (32 bytes per connection).
    """

    def __init__(self, now: float, resolution: float = 0.25) -> None:
        self._resolution = resolution
        self._buckets: dict[int, _Bucket[T]] = {}
        self._bucket_of: dict[T, _Bucket[T]] = {}
        self._cursor = math.floor(now / resolution)  # last slot already handed out

    def schedule(self, item: T, deadline: float) -> None:
        """Make ``item`` due at ``deadline``, replacing its earlier entry if any."""
        self.discard(item)
        slot = max(math.ceil(deadline / self._resolution), self._cursor + 1)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = _Bucket(slot)
        bucket[item] = None
        self._bucket_of[item] = bucket

    def discard(self, item: T) -> None:
        """Forget ``item`` (no-op if it is not scheduled); the wheel keeps no reference."""
        bucket = self._bucket_of.pop(item, None)
        if bucket is None:
            return
        del bucket[item]
        if not bucket:
            del self._buckets[bucket.slot]

    def due(self, now: float) -> list[T]:
        """Remove and return every item whose bucket's time is <= ``now``."""
        current = math.floor(now / self._resolution)
        found: list[T] = []
        buckets = self._buckets
        if current - self._cursor > len(buckets):
            # Long pause (or sparse wheel): visit the occupied slots only.
            slots = sorted(s for s in buckets if s <= current)
        else:
            slots = [s for s in range(self._cursor + 1, current + 1) if s in buckets]
        bucket_of = self._bucket_of
        for slot in slots:
            bucket = buckets.pop(slot)
            for item in bucket:
                del bucket_of[item]
            found.extend(bucket)
        self._cursor = max(self._cursor, current)
        return found

    def __len__(self) -> int:
        """Number of scheduled items."""
        return len(self._bucket_of)

    @property
    def occupied_slots(self) -> int:
        """Buckets holding at least one item (empty ones are never kept)."""
        return len(self._buckets)


class Deadlines(Generic[T]):
    """A min-heap of (when, key) for sparse, far-apart deadlines (will delays, session
    expiry, transaction checks), with one live deadline per key.

    Re-scheduling or cancelling a key leaves its old heap entry behind, stale: it is
    skipped when it comes out, and the heap is rebuilt once stale entries outnumber live
    ones, so memory stays within twice the live keys and each change costs amortised
    O(log n).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._live: dict[T, int] = {}  # key -> ticket of its live heap entry
        self._tickets = count()

    def schedule(self, key: T, when: float) -> None:
        """Make ``key`` due at ``when``, replacing its earlier deadline if any."""
        ticket = next(self._tickets)
        self._live[key] = ticket
        heapq.heappush(self._heap, (when, ticket, key))
        self._compact_if_sparse()

    def cancel(self, key: T) -> None:
        """Forget the deadline of ``key`` (no-op if it has none)."""
        if self._live.pop(key, None) is not None:
            self._compact_if_sparse()

    def due(self, now: float) -> list[T]:
        """Remove and return the keys whose deadline is <= ``now``, earliest first (ties
        in scheduling order)."""
        heap = self._heap
        live = self._live
        found: list[T] = []
        while heap and heap[0][0] <= now:
            _, ticket, key = heapq.heappop(heap)
            if live.get(key) == ticket:
                del live[key]
                found.append(key)
        self._compact_if_sparse()
        return found

    def _compact_if_sparse(self) -> None:
        if len(self._heap) > 2 * len(self._live):
            live = self._live
            self._heap = [entry for entry in self._heap if live.get(entry[2]) == entry[1]]
            heapq.heapify(self._heap)

    def __len__(self) -> int:
        """Number of keys with a deadline."""
        return len(self._live)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, live or stale: at most twice the live keys."""
        return len(self._heap)
