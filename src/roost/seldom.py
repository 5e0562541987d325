"""Attributes that most objects of a class leave None, kept out of their slots. Pure.

A slot costs 8 bytes on every object, used or not; with tens of thousands of idle
connections that adds up for attributes only a few connections set, and only for a while
(an attach waiting for a password check, an enhanced authentication in progress). A
:class:`Seldom` attribute lives in the object's one ``_seldom`` dict instead: made when
the first such attribute is set, dropped when the last goes back to None. Reading one
costs a call, so no attribute read per message may be one.
"""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar, cast, overload

T = TypeVar("T")


class HasSeldom(Protocol):
    """An object with a ``_seldom`` slot (None until a Seldom attribute is set)."""

    _seldom: dict[str, object] | None


class Seldom(Generic[T]):
    """A descriptor for an attribute that is None on most objects (see the module)."""

    __slots__ = ("name",)

    def __init__(self) -> None:
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Seldom[T]: ...

    @overload
    def __get__(self, instance: HasSeldom, owner: Any = None) -> T | None: ...

    def __get__(self, instance: HasSeldom | None, owner: Any = None) -> Seldom[T] | T | None:
        if instance is None:
            return self
        held = instance._seldom
        return None if held is None else cast("T | None", held.get(self.name))

    def __set__(self, instance: HasSeldom, value: T | None) -> None:
        held = instance._seldom
        if value is not None:
            if held is None:
                instance._seldom = {self.name: value}
            else:
                held[self.name] = value
        elif held is not None and held.pop(self.name, None) is not None and not held:
            instance._seldom = None
