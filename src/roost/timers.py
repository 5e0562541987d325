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
from typing import Generic, Protocol, TypeVar, cast

K = TypeVar("K", bound=Hashable)


class Linked(Protocol):
    """An item a :class:`TimingWheel` holds: it links the item through these two
    attributes, None while the item is not scheduled (so an item is on one wheel at most)."""

    wheel_prev: Linked | None
    wheel_next: Linked | None


T = TypeVar("T", bound=Linked)


class _Bucket:
    """The head of one slot's items: a circular doubly linked list through them."""

    __slots__ = ("slot", "wheel_next", "wheel_prev")

    def __init__(self, slot: int) -> None:
        self.slot = slot
        self.wheel_prev: Linked | None = self
        self.wheel_next: Linked | None = self


class TimingWheel(Generic[T]):
    """Buckets of items by deadline, ``resolution`` seconds wide (a hashed timing wheel).

    ``schedule`` and ``discard`` are O(1); ``due`` visits only the buckets whose time has
    come. A bucket is a list linked through its items (see :class:`Linked`), in scheduling
    order: the wheel keeps no table entry per item (a dict from item to bucket and a
    bucket dict cost about 100 bytes per connection at 10,000 connections; two slots on
    the item cost 16).
    """

    def __init__(self, now: float, resolution: float = 0.25) -> None:
        self._resolution = resolution
        self._buckets: dict[int, _Bucket] = {}
        self._count = 0
        self._cursor = math.floor(now / resolution)  # last slot already handed out

    def schedule(self, item: T, deadline: float) -> None:
        """Make ``item`` due at ``deadline``, replacing its earlier entry if any."""
        self.discard(item)
        slot = max(math.ceil(deadline / self._resolution), self._cursor + 1)
        bucket = self._buckets.get(slot)
        if bucket is None:
            bucket = self._buckets[slot] = _Bucket(slot)
        last = bucket.wheel_prev
        assert last is not None
        item.wheel_prev = last
        item.wheel_next = bucket
        last.wheel_next = bucket.wheel_prev = item
        self._count += 1

    def discard(self, item: T) -> None:
        """Forget ``item`` (no-op if it is not scheduled); the wheel keeps no reference."""
        before, after = item.wheel_prev, item.wheel_next
        if before is None or after is None:
            return
        before.wheel_next = after
        after.wheel_prev = before
        item.wheel_prev = item.wheel_next = None
        self._count -= 1
        if before is after:  # only the head is left: the bucket is empty
            assert isinstance(before, _Bucket)
            del self._buckets[before.slot]

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
        for slot in slots:
            bucket = buckets.pop(slot)
            node = bucket.wheel_next
            while node is not bucket:
                assert node is not None
                following = node.wheel_next
                node.wheel_prev = node.wheel_next = None
                found.append(cast(T, node))
                node = following
        self._count -= len(found)
        self._cursor = max(self._cursor, current)
        return found

    def __len__(self) -> int:
        """Number of scheduled items."""
        return self._count

    @property
    def occupied_slots(self) -> int:
        """Buckets holding at least one item (empty ones are never kept)."""
        return len(self._buckets)


class Deadlines(Generic[K]):
    """A min-heap of (when, key) for sparse, far-apart deadlines (will delays, session
    expiry, transaction checks), with one live deadline per key.

    Re-scheduling or cancelling a key leaves its old heap entry behind, stale: it is
    skipped when it comes out, and the heap is rebuilt once stale entries outnumber live
    ones, so memory stays within twice the live keys and each change costs amortised
    O(log n).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._live: dict[K, int] = {}  # key -> ticket of its live heap entry
        self._tickets = count()

    def schedule(self, key: K, when: float) -> None:
        """Make ``key`` due at ``when``, replacing its earlier deadline if any."""
        ticket = next(self._tickets)
        self._live[key] = ticket
        heapq.heappush(self._heap, (when, ticket, key))
        self._compact_if_sparse()

    def cancel(self, key: K) -> None:
        """Forget the deadline of ``key`` (no-op if it has none)."""
        if self._live.pop(key, None) is not None:
            self._compact_if_sparse()

    def due(self, now: float) -> list[K]:
        """Remove and return the keys whose deadline is <= ``now``, earliest first (ties
        in scheduling order)."""
        heap = self._heap
        live = self._live
        found: list[K] = []
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
