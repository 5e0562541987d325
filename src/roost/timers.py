"""Timer structures shared by all connections and sessions; every call takes ``now``.

No timer per connection [MISSION §4]: the broker runs ONE periodic sweep that asks these
structures what is due. Entries are never cancelled in place: the owner re-checks an item
when it comes due (has it heard from the client since? was the will cancelled?) and
re-schedules it if needed, so a heartbeat costs one attribute write.
"""

from __future__ import annotations

import heapq
import math
from itertools import count
from typing import Generic, TypeVar

T = TypeVar("T")


class TimingWheel(Generic[T]):
    """Buckets of items by deadline, ``resolution`` seconds wide (a hashed timing wheel).

    ``schedule`` is O(1); ``due`` visits only the buckets whose time has come.
    """

    def __init__(self, now: float, resolution: float = 0.25) -> None:
        self._resolution = resolution
        self._buckets: dict[int, list[T]] = {}
        self._cursor = math.floor(now / resolution)  # last slot already handed out

    def schedule(self, item: T, deadline: float) -> None:
        slot = max(math.ceil(deadline / self._resolution), self._cursor + 1)
        bucket = self._buckets.get(slot)
        if bucket is None:
            self._buckets[slot] = [item]
        else:
            bucket.append(item)

    def due(self, now: float) -> list[T]:
        """Remove and return every item whose bucket's time is <= ``now``."""
        current = math.floor(now / self._resolution)
        found: list[T] = []
        buckets = self._buckets
        if current - self._cursor > len(buckets):
            # Long pause (or sparse wheel): visit the occupied slots only.
            for slot in sorted(s for s in buckets if s <= current):
                found.extend(buckets.pop(slot))
        else:
            for slot in range(self._cursor + 1, current + 1):
                bucket = buckets.pop(slot, None)
                if bucket is not None:
                    found.extend(bucket)
        self._cursor = max(self._cursor, current)
        return found

    def __len__(self) -> int:
        return sum(len(bucket) for bucket in self._buckets.values())


class Deadlines(Generic[T]):
    """A min-heap of (when, item) for sparse, far-apart deadlines (will delays, session
    expiry, transaction checks)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = count()

    def schedule(self, item: T, when: float) -> None:
        heapq.heappush(self._heap, (when, next(self._order), item))

    def due(self, now: float) -> list[T]:
        heap = self._heap
        found: list[T] = []
        while heap and heap[0][0] <= now:
            found.append(heapq.heappop(heap)[2])
        return found

    def __len__(self) -> int:
        return len(self._heap)
