"""Items for a TimingWheel in tests: keys (str or int) the wheel can link into a bucket,
equal to the key they stand for, so that what ``due`` returns compares with plain keys."""

from __future__ import annotations

from typing import Any


class LinkedStr(str):
    """A str with the two attributes the wheel links its items through."""

    wheel_prev: Any = None
    wheel_next: Any = None


class LinkedInt(int):
    """An int with the two attributes the wheel links its items through."""

    wheel_prev: Any = None
    wheel_next: Any = None


class Items(dict[Any, Any]):
    """One linkable item per key, made on first use: ``items["x"]`` is always the same
    object (the wheel finds an item's entry through the item itself)."""

    def __missing__(self, key: str | int) -> LinkedStr | LinkedInt:
        item = self[key] = LinkedStr(key) if isinstance(key, str) else LinkedInt(key)
        return item
