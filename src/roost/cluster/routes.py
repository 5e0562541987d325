"""The cluster's route table: which nodes have subscribers of which topic filters. Pure.

Every node holds the whole table in memory. A node announces a filter when it gains its
first local subscriber of it and withdraws it when it loses its last one, so the table
changes with the set of filters, not with every SUBSCRIBE. A publish goes only to the
nodes whose filters match its topic; for a shared subscription group present on several
nodes, one of them is chosen per message, taking turns, so that each message reaches one
member of the group cluster-wide [MQTT 4.8.2].
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence

from roost.cache import GenerationalCache
from roost.topics import SHARE_PREFIX, TopicTrie

MATCH_CACHE_SIZE = 4096
_NO_SHARED: frozenset[str] = frozenset()


class ClusterRoutes:
    """Topic filter -> nodes with subscribers, for matching a topic to nodes."""

    def __init__(self, own_node: str) -> None:
        self.own_node = own_node
        self._trie: TopicTrie[str, None] = TopicTrie(MATCH_CACHE_SIZE)
        self._by_node: dict[str, set[str]] = {}
        self._next_member: dict[str, int] = {}  # shared filter -> turn
        # Topic -> the other nodes it goes to, for topics that match no shared filter
        # (whose destinations do not take turns); forgotten when a route changes.
        self._plain: GenerationalCache[tuple[str, ...]] = GenerationalCache(MATCH_CACHE_SIZE)

    def add(self, node: str, topic_filter: str) -> None:
        self._trie.add(topic_filter, node, None)
        self._by_node.setdefault(node, set()).add(topic_filter)
        self._plain.clear()

    def remove(self, node: str, topic_filter: str) -> None:
        self._trie.remove(topic_filter, node)
        self._plain.clear()
        filters = self._by_node.get(node)
        if filters is not None:
            filters.discard(topic_filter)

    def replace(self, node: str, topic_filters: Iterable[str]) -> None:
        """Set a node's whole list of filters (after reading it from Redis)."""
        wanted = set(topic_filters)
        current = self._by_node.get(node, set())
        for topic_filter in current - wanted:
            self.remove(node, topic_filter)
        for topic_filter in wanted - current:
            self.add(node, topic_filter)

    def drop_node(self, node: str) -> None:
        for topic_filter in list(self._by_node.pop(node, ())):
            self.remove(node, topic_filter)

    def nodes(self) -> list[str]:
        """Nodes with at least one filter."""
        return [node for node, filters in self._by_node.items() if filters]

    def filters_of(self, node: str) -> frozenset[str]:
        return frozenset(self._by_node.get(node, ()))

    def destinations(self, topic: str) -> tuple[dict[str, Sequence[str]], Collection[str]]:
        """Where a message on ``topic`` goes: {other node: shared filters it serves} and
        the shared filters this node serves itself (a new dict the caller may change).

        Every other node with a matching ordinary filter is listed (maybe with no shared
        filter); each matching shared filter is given to one of its nodes, in turn.
        """
        cache = self._plain
        plain = cache.young.get(topic)
        if plain is None:
            plain = cache.revive(topic)
        if plain is not None:
            return dict.fromkeys(plain, ()), _NO_SHARED
        remote: dict[str, Sequence[str]] = {}
        own_shared: set[str] = set()
        own = self.own_node
        shared = False
        for topic_filter, nodes in self._trie.match(topic):
            if topic_filter.startswith(SHARE_PREFIX):
                shared = True
                chosen = self._take_turn(topic_filter, nodes)
                if chosen == own:
                    own_shared.add(topic_filter)
                else:
                    remote[chosen] = [*remote.get(chosen, ()), topic_filter]
                continue
            for node in nodes:
                if node != own and node not in remote:
                    remote[node] = ()
        if not shared:
            self._plain.put(topic, tuple(remote))
        return remote, own_shared

    def nodes_with(self, topic_filter: str) -> set[str]:
        """The nodes with subscribers of exactly ``topic_filter``."""
        return set(self._trie.get(topic_filter) or ())

    def node_for_group(self, topic_filter: str, eligible: Callable[[str], bool]) -> str | None:
        """One of the nodes with members of the shared group ``topic_filter`` that
        ``eligible`` accepts, each in turn; None if there is none."""
        nodes = [node for node in self._trie.get(topic_filter) or () if eligible(node)]
        return self.take_turn(topic_filter, nodes) if nodes else None

    def take_turn(self, topic_filter: str, nodes: Iterable[str]) -> str:
        """One of ``nodes`` for ``topic_filter``, each in turn."""
        return self._take_turn(topic_filter, dict.fromkeys(nodes))

    def _take_turn(self, topic_filter: str, nodes: dict[str, None]) -> str:
        members = sorted(nodes)
        turn = self._next_member.get(topic_filter, 0)
        self._next_member[topic_filter] = turn + 1
        return members[turn % len(members)]
