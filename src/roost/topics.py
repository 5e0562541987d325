"""Topic names, topic filters, the subscription trie and a map of topics found by filter
(MQTT 5.0 sections 4.7 and 4.8.2; rule numbers below are MQTT 5.0's).

Pure functions and data structures: no I/O, no asyncio. Callers validate a name or filter
before handing it to :class:`TopicTrie`; the trie itself does not re-check.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from itertools import count
from typing import Generic, TypeVar, overload

from roost.cache import GenerationalCache
from roost.errors import ProtocolError, ReasonCode

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")

SEPARATOR = "/"
SINGLE_LEVEL = "+"
MULTI_LEVEL = "#"
SHARE_PREFIX = "$share/"

MATCH_CACHE_SIZE = 4096


def _too_long(text: str, max_length: int) -> bool:
    """True if ``text`` needs more than ``max_length`` bytes in UTF-8 (at most 4 per char)."""
    if len(text) > max_length:
        return True
    return len(text) * 4 > max_length and len(text.encode("utf-8")) > max_length


def _check_size(text: str, levels: int, max_length: int, max_levels: int, code: ReasonCode) -> None:
    """Enforce the configured byte length and level count of a name or filter."""
    if _too_long(text, max_length):
        raise ProtocolError(f"topic {text[:64]!r} is longer than {max_length} bytes", code)
    if levels > max_levels:
        raise ProtocolError(f"topic {text[:64]!r} has more than {max_levels} levels", code)


def validate_topic_name(name: str, max_length: int = 65535, max_levels: int = 128) -> None:
    """Reject a PUBLISH topic name that is empty [MQTT-4.7.3-1], holds a wildcard
    [MQTT-3.3.2-2] or exceeds the configured limits (TOPIC_NAME_INVALID)."""
    code = ReasonCode.TOPIC_NAME_INVALID
    if not name:
        raise ProtocolError("topic name is empty", code)
    if SINGLE_LEVEL in name or MULTI_LEVEL in name:
        raise ProtocolError(f"topic name {name[:64]!r} contains a wildcard", code)
    _check_size(name, name.count(SEPARATOR) + 1, max_length, max_levels, code)


def _check_wildcards(topic_filter: str, code: ReasonCode) -> None:
    """'#' only as the whole last level [MQTT-4.7.1-1], '+' only as a whole level
    [MQTT-4.7.1-2]."""
    if SINGLE_LEVEL not in topic_filter and MULTI_LEVEL not in topic_filter:
        return
    levels = topic_filter.split(SEPARATOR)
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if MULTI_LEVEL in level and (level != MULTI_LEVEL or index != last):
            raise ProtocolError(f"'#' must be the whole last level in {topic_filter!r}", code)
        if SINGLE_LEVEL in level and level != SINGLE_LEVEL:
            raise ProtocolError(f"'+' must be a whole level in {topic_filter!r}", code)


def validate_topic_filter(
    topic_filter: str, max_length: int = 65535, max_levels: int = 128
) -> None:
    """Reject a SUBSCRIBE/UNSUBSCRIBE filter that is empty [MQTT-4.7.3-1], misuses a
    wildcard [MQTT-4.7.1-1, 4.7.1-2] or exceeds the limits (TOPIC_FILTER_INVALID).

    A shared filter ``$share/{group}/{filter}`` needs a non-empty group without '+', '#'
    or '/' and a non-empty valid filter [MQTT-4.8.2-1, 4.8.2-2]; ``max_levels`` counts the
    levels of that inner filter, ``max_length`` the whole string.
    """
    code = ReasonCode.TOPIC_FILTER_INVALID
    if not topic_filter:
        raise ProtocolError("topic filter is empty", code)
    group, inner = parse_shared(topic_filter)
    if group is not None:
        if not group or SINGLE_LEVEL in group or MULTI_LEVEL in group:
            raise ProtocolError(f"invalid share name in {topic_filter!r}", code)
        if not inner:
            raise ProtocolError(f"shared subscription {topic_filter!r} has no filter", code)
    _check_wildcards(inner, code)
    _check_size(topic_filter, inner.count(SEPARATOR) + 1, max_length, max_levels, code)


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/{group}/{filter}`` into ``(group, filter)`` (section 4.8.2); a
    non-shared filter gives ``(None, topic_filter)``. Expects a validated filter."""
    if not topic_filter.startswith(SHARE_PREFIX):
        return None, topic_filter
    group, _, inner = topic_filter[len(SHARE_PREFIX) :].partition(SEPARATOR)
    return group, inner


def is_wildcard(topic_filter: str) -> bool:
    """True if the filter contains '+' or '#'."""
    return SINGLE_LEVEL in topic_filter or MULTI_LEVEL in topic_filter


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether ``topic`` matches ``topic_filter`` (section 4.7), level by level.

    ``a/#`` matches ``a`` (section 4.7.1.2); a topic starting with '$' is not matched by a
    filter starting with a wildcard [MQTT-4.7.2-1]; a shared filter matches like its
    inner filter. Reference implementation: the broker routes with :class:`TopicTrie`.
    """
    filter_levels = parse_shared(topic_filter)[1].split(SEPARATOR)
    topic_levels = topic.split(SEPARATOR)
    if topic.startswith("$") and filter_levels[0] in (SINGLE_LEVEL, MULTI_LEVEL):
        return False
    for index, level in enumerate(filter_levels):
        if level == MULTI_LEVEL:
            return True
        if index >= len(topic_levels) or level not in (SINGLE_LEVEL, topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


class TopicNameCheck:
    """:func:`validate_topic_name` with the configured limits, remembering names already
    found valid (bounded), since publishers repeat the same few topics."""

    __slots__ = ("_known", "_max_length", "_max_levels")

    def __init__(self, max_length: int, max_levels: int) -> None:
        self._max_length = max_length
        self._max_levels = max_levels
        self._known: set[str] = set()

    def check(self, name: str) -> None:
        known = self._known
        if name in known:
            return
        validate_topic_name(name, self._max_length, self._max_levels)
        if len(known) >= MATCH_CACHE_SIZE:
            known.clear()
        known.add(name)


class TopicMap(MutableMapping[str, V]):
    """Values by topic name that can also be found by topic filter: a dict for exact
    lookups plus an index of levels, so a filter visits the topics under its literal
    levels instead of every topic (retained messages for a SUBSCRIBE, cached routes to
    forget on a subscription change). Iteration and :meth:`matching` give the oldest topic
    first, as a dict would.

    The level index is flat: each topic prefix, as its levels each followed by '/' (the
    root is ''), maps to its child levels in a dict of strings. Such dicts are not tracked
    by the cyclic garbage collector, so the index adds nothing it has to scan again and
    again. A new topic is indexed at the next lookup by a wildcard filter or removal, not
    when it is added: a map read only by exact topic (the route cache between changes to
    wildcard subscriptions, missing on every new topic) pays one list append per topic.
    """

    def __init__(self) -> None:
        self._values: dict[str, V] = {}
        self._unindexed: list[str] = []  # topics added since the index was brought up to date
        self._order: dict[str, int] = {}  # indexed topic -> when it was added
        self._children: dict[str, dict[str, None]] = {}  # prefix -> its child levels
        self._added = count()

    def __getitem__(self, topic: str) -> V:
        return self._values[topic]

    @overload
    def get(self, topic: str, /) -> V | None: ...
    @overload
    def get(self, topic: str, default: V, /) -> V: ...
    @overload
    def get(self, topic: str, default: D, /) -> V | D: ...
    def get(self, topic: str, default: object = None, /) -> object:
        """Like dict.get, without the mixin's exception on a miss: it is on the hot path."""
        return self._values.get(topic, default)

    def __contains__(self, topic: object) -> bool:
        return topic in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __setitem__(self, topic: str, value: V) -> None:
        """Add or replace; a replaced topic keeps its place in the order."""
        if topic not in self._values:
            self._unindexed.append(topic)
        self._values[topic] = value

    def index_new_topics(self) -> None:
        """Index the topics added since the index was last brought up to date, in the
        order they came; done by any lookup by a wildcard filter or removal, or now."""
        children = self._children
        order = self._order
        for topic in self._unindexed:
            order[topic] = next(self._added)
            prefix = ""
            for level in topic.split(SEPARATOR):
                levels = children.get(prefix)
                if levels is None:
                    levels = children[prefix] = {}
                levels[level] = None
                prefix += level + SEPARATOR
        self._unindexed.clear()

    def __delitem__(self, topic: str) -> None:
        """Remove a topic, and the index entries of the prefixes it leaves empty."""
        self.index_new_topics()
        del self._values[topic]
        del self._order[topic]
        levels = topic.split(SEPARATOR)
        prefixes = [""]
        for level in levels:
            prefixes.append(prefixes[-1] + level + SEPARATOR)
        children = self._children
        for depth in range(len(levels), 0, -1):
            prefix = prefixes[depth]
            if prefix in children or prefix[:-1] in self._values:
                break  # still leads to a topic
            parent = children[prefixes[depth - 1]]
            del parent[levels[depth - 1]]
            if parent:
                break
            del children[prefixes[depth - 1]]

    def clear(self) -> None:
        """Empty the map at once (the mixin would delete topic by topic)."""
        self._values.clear()
        self._unindexed.clear()
        self._order.clear()
        self._children.clear()

    def matching(self, topic_filter: str) -> list[str]:
        """The topics a (non-shared) filter matches (section 4.7), oldest first.

        ``a/#`` matches ``a`` (section 4.7.1.2); '$' topics are not matched by a leading
        wildcard [MQTT-4.7.2-1]. Visits only prefixes under the filter's literal levels.
        """
        if not is_wildcard(topic_filter):
            return [topic_filter] if topic_filter in self._values else []
        self.index_new_topics()
        levels = topic_filter.split(SEPARATOR)
        last = len(levels)
        children = self._children
        values = self._values
        found: list[str] = []
        stack = [("", 0)]
        while stack:
            prefix, depth = stack.pop()
            if depth == last:
                if prefix[:-1] in values:
                    found.append(prefix[:-1])
                continue
            level = levels[depth]
            if level == SINGLE_LEVEL:
                below = self._wildcard_children(prefix, depth)
                stack.extend((prefix + child + SEPARATOR, depth + 1) for child in below)
            elif level == MULTI_LEVEL:
                # This level and every one below: 'a/#' matches 'a' (section 4.7.1.2).
                if depth:
                    pending = [prefix]
                else:
                    pending = [child + SEPARATOR for child in self._wildcard_children(prefix, 0)]
                while pending:
                    prefix = pending.pop()
                    topic = prefix[:-1]
                    if topic in values:
                        found.append(topic)
                    deeper = children.get(prefix)
                    if deeper:
                        pending.extend([prefix + child + SEPARATOR for child in deeper])
            elif level in children.get(prefix, ()):
                stack.append((prefix + level + SEPARATOR, depth + 1))
        found.sort(key=self._order.__getitem__)
        return found

    def _wildcard_children(self, prefix: str, depth: int) -> Iterable[str]:
        """The levels under ``prefix`` a '+' or '#' may enter: at the first level, not
        those of '$' topics [MQTT-4.7.2-1]."""
        below = self._children.get(prefix, ())
        if depth:
            return below
        return [level for level in below if not level.startswith("$")]

    def values_matching(self, topic_filter: str) -> list[V]:
        """The values of the topics a (non-shared) filter matches, oldest topic first."""
        values = self._values
        return [values[topic] for topic in self.matching(topic_filter)]

    def discard_matching(self, topic_filter: str) -> None:
        """Remove every topic the (non-shared) filter matches."""
        for topic in self.matching(topic_filter):
            del self[topic]


class _Node(Generic[K, V]):
    """One level of the trie: children by level text, and the subscriptions whose
    (inner) filter ends here, by full filter (a plain filter and its ``$share`` forms
    share a node)."""

    __slots__ = ("children", "subscriptions")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K, V]] = {}
        self.subscriptions: dict[str, dict[K, V]] = {}


class TopicTrie(Generic[K, V]):
    """Maps topic filters to ``{key: value}`` (e.g. client id -> subscription) and finds
    every filter matching a topic by walking the levels, not by scanning all filters.

    Shared filters are indexed by their inner filter, so ``$share/g/a/+`` is found by
    ``match("a/b")`` under its full text. Results of :meth:`match` and :meth:`get` are the
    trie's own dicts: callers must not mutate them, and must copy them before calling
    :meth:`add` or :meth:`remove` while iterating.
    """

    def __init__(self, cache_size: int = MATCH_CACHE_SIZE) -> None:
        self._root: _Node[K, V] = _Node()
        self._count = 0
        self._cache: GenerationalCache[list[tuple[str, dict[K, V]]]] = GenerationalCache(
            cache_size // 2
        )

    @staticmethod
    def _levels(topic_filter: str) -> list[str]:
        return parse_shared(topic_filter)[1].split(SEPARATOR)

    def _path(self, topic_filter: str) -> list[_Node[K, V]] | None:
        """Nodes from the root to the filter's node, or None if it is not in the trie."""
        path = [self._root]
        for level in self._levels(topic_filter):
            child = path[-1].children.get(level)
            if child is None:
                return None
            path.append(child)
        return path

    def add(self, topic_filter: str, key: K, value: V) -> bool:
        """Store ``value`` for ``key`` under the filter; True if the key is new there
        (otherwise its value is replaced)."""
        node = self._root
        for level in self._levels(topic_filter):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        entries = node.subscriptions.get(topic_filter)
        if entries is None:
            entries = node.subscriptions[topic_filter] = {}
        self._cache.clear()
        is_new = key not in entries
        entries[key] = value
        self._count += is_new
        return is_new

    def remove(self, topic_filter: str, key: K) -> V | None:
        """Remove ``key`` from the filter and return its value (None if absent), pruning
        nodes left empty."""
        path = self._path(topic_filter)
        if path is None:
            return None
        node = path[-1]
        entries = node.subscriptions.get(topic_filter)
        if entries is None or key not in entries:
            return None
        value = entries.pop(key)
        self._count -= 1
        self._cache.clear()
        if not entries:
            del node.subscriptions[topic_filter]
        levels = self._levels(topic_filter)
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.children or node.subscriptions:
                break
            del path[depth - 1].children[levels[depth - 1]]
        return value

    def get(self, topic_filter: str) -> dict[K, V] | None:
        """The entries of exactly this filter (not to be mutated), or None."""
        path = self._path(topic_filter)
        return None if path is None else path[-1].subscriptions.get(topic_filter)

    def match(self, topic: str) -> list[tuple[str, dict[K, V]]]:
        """Every ``(filter, entries)`` whose filter matches ``topic`` (section 4.7), in
        no particular order. Cached per topic until the next add/remove (a topic in use
        stays cached while one-off topics pass through); neither the list nor the dicts
        may be mutated."""
        cache = self._cache
        cached = cache.young.get(topic)
        if cached is None:
            cached = cache.revive(topic)
        if cached is not None:
            return cached
        result: list[tuple[str, dict[K, V]]] = []
        levels = topic.split(SEPARATOR)
        depth_end = len(levels)
        root = self._root
        stack: list[tuple[_Node[K, V], int]] = []
        if topic.startswith("$"):
            # Wildcards in the first level do not match '$' topics [MQTT-4.7.2-1].
            child = root.children.get(levels[0])
            if child is not None:
                stack.append((child, 1))
        else:
            stack.append((root, 0))
        while stack:
            node, depth = stack.pop()
            children = node.children
            multi = children.get(MULTI_LEVEL)
            if multi is not None:
                # '#' also matches the parent level: 'a/#' matches 'a' (section 4.7.1.2).
                result.extend(multi.subscriptions.items())
            if depth == depth_end:
                result.extend(node.subscriptions.items())
                continue
            child = children.get(levels[depth])
            if child is not None:
                stack.append((child, depth + 1))
            single = children.get(SINGLE_LEVEL)
            if single is not None:
                stack.append((single, depth + 1))
        cache.put(topic, result)
        return result

    def __len__(self) -> int:
        """Number of (filter, key) entries."""
        return self._count

    def filters(self) -> Iterator[str]:
        """Every filter holding at least one entry."""
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield from node.subscriptions
            stack.extend(node.children.values())
