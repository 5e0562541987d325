"""A bounded cache that keeps what is used while one-off keys stream through. Pure.

A cache cleared whenever it is full (what the route caches did) loses its hot entries to
any stream of new keys: each client's own ``$SYS/roost/clients/<id>/connected`` presence
topic, say. Here entries live in two generations of at most ``size`` each: new entries go
to the young one; when it is full, the old one is dropped and the young one becomes old;
a hit in the old generation moves the entry back to the young one. So an entry used once
per ``size`` new entries stays cached, whatever passes through in between, and the cache
holds at most ``2 * size`` entries. A hit in the young generation is one lookup, as in a
plain dict; unlike an LRU, nothing is reordered on a hit.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Generic, TypeVar

V = TypeVar("V")


class GenerationalCache(Generic[V]):
    """Values by key in a young and an old generation; look in :attr:`young` first (the
    hot path), then :meth:`revive`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.young: MutableMapping[str, V] = self.new_generation()
        self.old: MutableMapping[str, V] = self.new_generation()

    def new_generation(self) -> MutableMapping[str, V]:
        """An empty generation (a dict; a subclass may use a richer mapping)."""
        return {}

    def get(self, key: str) -> V | None:
        value = self.young.get(key)
        return self.revive(key) if value is None else value

    def revive(self, key: str) -> V | None:
        """The value of ``key`` if the old generation has it (moved back to the young
        one), else None."""
        value = self.old.get(key)
        if value is not None:
            self.put(key, value)
        return value

    def put(self, key: str, value: V) -> None:
        young = self.young
        if len(young) >= self.size:
            self.old = young
            self.young = young = self.new_generation()
        young[key] = value

    def clear(self) -> None:
        self.young = self.new_generation()
        self.old = self.new_generation()

    def __len__(self) -> int:
        """Entries held (a revived key counts in both generations until the old goes)."""
        return len(self.young) + len(self.old)
